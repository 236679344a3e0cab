"""The one place that decides between the Triton kernels and the torch paths.

`use_triton` everywhere in `hetcache_cli.kernels` means:
    None  -> auto: Triton when it imports and either the tensors are CUDA (native) or
             the Triton interpreter is on (TRITON_INTERPRET=1); otherwise torch.
    True  -> Triton or a RuntimeError that says why it cannot run.
    False -> the torch path.

Triton is an optional import: without it every call takes the torch path.

The interpreter flag is read by `triton.jit` when a kernel is decorated, not when it is
launched. The kernel modules are therefore imported lazily, on the first Triton call,
and the mode they were built in is pinned from then on (`triton_mode()` reports it).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

import torch

try:
    import triton
except Exception as exc:  # ImportError, or a broken install raising on import
    triton = None
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None

_TRUE_WORDS = {"1", "true", "on", "yes"}
_KERNEL_MODULES = {
    "tokens": "hetcache_cli.kernels._triton_tokens",
    "attention": "hetcache_cli.kernels._triton_attention",
}
_loaded: dict[str, ModuleType] = {}
_pinned_mode: str | None = None


@dataclass(frozen=True)
class TritonStatus:
    """What a selftest prints: mode is "native", "interpreter" or "unavailable"."""

    mode: str
    version: str | None
    reason: str


def triton_available() -> bool:
    """True when `import triton` succeeds."""
    return triton is not None


def interpreter_requested() -> bool:
    """True when TRITON_INTERPRET asks for the interpreter (same words Triton accepts)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE_WORDS


def triton_mode() -> str:
    """The mode: "native", "interpreter" or "unavailable" (pinned once the kernels are built)."""
    if triton is None:
        return "unavailable"
    if _pinned_mode is not None:
        return _pinned_mode
    if interpreter_requested():
        return "interpreter"
    if torch.cuda.is_available():
        return "native"
    return "unavailable"


def triton_status() -> TritonStatus:
    mode = triton_mode()
    version = getattr(triton, "__version__", None)
    if mode == "native":
        reason = "Triton compiles kernels for the CUDA device"
    elif mode == "interpreter":
        reason = "TRITON_INTERPRET is set: kernels run in the Triton interpreter on the CPU"
    elif triton is None:
        reason = f"triton does not import ({_IMPORT_ERROR}); install triton or use the torch path"
    else:
        reason = "no CUDA device and TRITON_INTERPRET is not set; the torch path is used"
    return TritonStatus(mode=mode, version=version, reason=reason)


def resolve_use_triton(use_triton: bool | None, *tensors: torch.Tensor, op: str = "kernel") -> bool:
    """Decide the backend for one call; raises RuntimeError when use_triton=True cannot be met."""
    if use_triton is False:
        return False
    mode = triton_mode()
    on_cuda = all(t.is_cuda for t in tensors)
    runnable = mode == "interpreter" or (mode == "native" and on_cuda)
    if use_triton is None:
        return runnable
    if runnable:
        return True
    if triton is None:
        why = f"triton does not import ({_IMPORT_ERROR})"
    elif mode == "native":
        why = "the tensors are not all on a CUDA device; set TRITON_INTERPRET=1 to run the kernels on the CPU"
    else:
        why = "there is no CUDA device and TRITON_INTERPRET is not set (it must be set before the first Triton call)"
    raise RuntimeError(
        f"{op}: use_triton=True but Triton cannot run: {why}. Pass use_triton=None or False for the torch path."
    )


def kernels(name: str) -> ModuleType:
    """A Triton kernel module ("tokens", "attention"); all are built on the first call."""
    global _pinned_mode
    if not _loaded:
        if triton is None:
            raise RuntimeError(f"triton does not import ({_IMPORT_ERROR})")
        mode = "interpreter" if interpreter_requested() else "native"
        modules = {key: importlib.import_module(path) for key, path in _KERNEL_MODULES.items()}
        _pinned_mode = mode
        _loaded.update(modules)
    return _loaded[name]


def interpreted() -> bool:
    """True when the kernels run (or will run) in the Triton interpreter."""
    return triton_mode() == "interpreter"
