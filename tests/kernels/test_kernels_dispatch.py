"""Backend choice (dispatch.py): auto / must / never, mode reporting, triton optional."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from hetcache_cli.kernels import dispatch, gather_tokens, resolve_use_triton, triton_status

CPU = torch.zeros(1)


@pytest.fixture
def fresh(monkeypatch):
    """Dispatch state as before the first Triton call, with no CUDA device."""
    monkeypatch.setattr(dispatch, "_pinned_mode", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return monkeypatch


def test_false_always_takes_the_torch_path(fresh):
    fresh.setenv("TRITON_INTERPRET", "1")
    assert resolve_use_triton(False, CPU) is False


@pytest.mark.skipif(not dispatch.triton_available(), reason="triton does not import")
def test_interpreter_flag_selects_triton_on_cpu(fresh):
    for word in ("1", "true", "ON"):
        fresh.setenv("TRITON_INTERPRET", word)
        assert dispatch.triton_mode() == "interpreter"
        assert resolve_use_triton(None, CPU) is True
        assert resolve_use_triton(True, CPU) is True
    fresh.setenv("TRITON_INTERPRET", "0")
    assert dispatch.triton_mode() == "unavailable"


@pytest.mark.skipif(not dispatch.triton_available(), reason="triton does not import")
def test_without_cuda_or_interpreter_auto_is_torch_and_must_raises(fresh):
    assert dispatch.triton_mode() == "unavailable"
    assert resolve_use_triton(None, CPU) is False
    why = "gather_tokens: use_triton=True but Triton cannot run: there is no CUDA device and TRITON_INTERPRET"
    with pytest.raises(RuntimeError, match=why):
        resolve_use_triton(True, CPU, op="gather_tokens")
    status = triton_status()
    assert status.mode == "unavailable" and status.version and "torch path" in status.reason


@pytest.mark.skipif(not dispatch.triton_available(), reason="triton does not import")
def test_native_mode_keeps_cpu_tensors_on_torch(fresh):
    fresh.setattr(torch.cuda, "is_available", lambda: True)
    assert dispatch.triton_mode() == "native"
    assert resolve_use_triton(None, CPU) is False
    with pytest.raises(RuntimeError, match="not all on a CUDA device"):
        resolve_use_triton(True, CPU)


def test_missing_triton_is_reported(fresh):
    fresh.setattr(dispatch, "triton", None)
    fresh.setattr(dispatch, "_IMPORT_ERROR", "ModuleNotFoundError: No module named 'triton'")
    fresh.setenv("TRITON_INTERPRET", "1")
    assert not dispatch.triton_available() and dispatch.triton_mode() == "unavailable"
    assert resolve_use_triton(None, CPU) is False
    with pytest.raises(RuntimeError, match="triton does not import .ModuleNotFoundError"):
        gather_tokens(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long), use_triton=True)
    assert "install triton" in triton_status().reason


def test_package_imports_and_runs_without_triton():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
        import torch
        from hetcache_cli import kernels
        assert not kernels.triton_available() and kernels.triton_mode() == "unavailable"
        x = torch.arange(24.0).view(1, 6, 4)
        out = kernels.gather_tokens(x, torch.tensor([[4, 1]]))
        assert torch.equal(out, x[:, [4, 1]])
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
