"""Runs the Triton half of test_kernels_ops.py in a child pytest under the interpreter.

`triton.jit` reads TRITON_INTERPRET when a kernel is decorated, and the kernels here are
decorated on their first use, so the variable has to be set before that in a fresh
process; setting it in this process would also switch every other test to the
interpreter. When this process already interprets (TRITON_INTERPRET=1 pytest ...), the
cases ran in-process and this test skips.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hetcache_cli.kernels import dispatch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def run_under_interpreter(test_file: str, timeout_s: int) -> None:
    """Run the `triton` cases of one test file in a child pytest with TRITON_INTERPRET=1; all must pass."""
    if not dispatch.triton_available():
        pytest.skip("triton does not import: only the torch paths can run")
    if dispatch.triton_mode() == "interpreter":
        pytest.skip("this process runs under the interpreter: the Triton cases ran in-process")
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [
        sys.executable, "-m", "pytest", str(HERE / test_file),
        "-k", "triton", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, report


@pytest.mark.slow
def test_triton_cases_under_interpreter():
    run_under_interpreter("test_kernels_ops.py", 600)


@pytest.mark.rehearsal
def test_engine_kernels_in_half_precision_under_interpreter():
    """The engine's kernel calls in bfloat16 / float16 (a GPU run's inputs), Triton against torch."""
    run_under_interpreter("test_kernels_engine_dtypes.py", 900)
