"""Fixtures for the kernel tests.

The Triton cases need the interpreter, whose flag (TRITON_INTERPRET=1) must be set
before the kernels are first built. This conftest does NOT set it: doing so would switch
every other test of the same pytest process to the (slow) interpreted kernels. Instead
the `use_triton` fixture skips its Triton half unless this process already runs in the
interpreter, and test_kernels_triton_subprocess.py runs those cases in a child pytest
with the variable set. `TRITON_INTERPRET=1 pytest tests/kernels` runs them in-process.
"""

from __future__ import annotations

import pytest

from hetcache_cli.kernels import dispatch

INTERPRETER_SKIP = (
    "Triton cases need TRITON_INTERPRET=1 from the start; "
    "test_kernels_triton_subprocess.py runs them in a child process"
)


@pytest.fixture(params=["torch", "triton"])
def use_triton(request) -> bool:
    """Backend of the op under test: False (torch path) or True (Triton, interpreted)."""
    if request.param == "torch":
        return False
    if dispatch.triton_mode() != "interpreter":
        pytest.skip(INTERPRETER_SKIP)
    return True
