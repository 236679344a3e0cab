"""`hetcache selftest` on the CPU: the real run passes; broken kernels, a broken engine and a
missing CUDA device are reported the way a CI job needs (named, non-zero exit)."""

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

import hetcache_cli.selftest.checks as selftest_mod
from hetcache_cli.cli.selftest import selftest
from hetcache_cli.selftest.kernel_checks import KERNEL_CASES

app = typer.Typer()
app.command()(selftest)


@app.callback()
def _root() -> None:
    """Keeps `selftest` a subcommand, as in the real app."""


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["selftest", *map(str, args)])


def checks_by_name(result) -> dict:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


@pytest.fixture
def no_demo(monkeypatch):
    """The kernel and environment checks only: the demo edit is what takes seconds."""
    monkeypatch.setattr(selftest_mod, "demo_checks", lambda runner, dev, quick, dtype: None)


@pytest.mark.slow
def test_quick_cpu_run_passes_end_to_end():
    r = invoke("--device", "cpu", "--quick", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    env = report["environment"]
    assert env["selftest"] == {"device": "cpu", "quick": True, "dtype": "float32"}  # auto on a CPU
    assert env["torch"]["version"] == torch.__version__ and env["ffmpeg"]["path"]
    assert env["triton"]["mode"] in ("native", "interpreter", "unavailable")
    assert "native" in env["attention_backends"]["usable"]
    checks = {c["name"]: c for c in report["checks"]}
    assert {c["status"] for c in checks.values()} <= {"PASS", "SKIP"}
    for op in KERNEL_CASES:
        assert checks[f"kernel {op} (torch)"]["status"] == "PASS"
        if env["triton"]["mode"] == "interpreter":  # TRITON_INTERPRET=1 pytest ...
            assert checks[f"kernel {op} (triton)"]["status"] == "PASS"
    if env["triton"]["mode"] != "interpreter":
        assert checks["kernels (triton)"]["status"] == "SKIP"
        if env["triton"]["version"] is not None:
            assert checks["kernels (triton)"]["detail"].startswith("interpreter not enabled; skipped")
    demo = ("demo model", "demo edit (cache none)", "demo edit (hetcache)")
    for name in ("device", "ffmpeg", "attention backend", *demo):
        assert checks[name]["status"] == "PASS", checks[name]
    assert all(c["seconds"] >= 0 for c in checks.values())
    cached = checks["demo edit (hetcache)"]["data"]
    assert cached["decisions"]["partial"] > 0 and cached["decisions"]["reuse"] > 0
    assert 0 < cached["flops_ratio"] < 1 and cached["speedup"] > 0
    assert checks["demo edit (cache none)"]["data"]["flops_ratio"] == pytest.approx(1.0)


def test_kernel_mismatch_fails_and_names_the_kernel(monkeypatch, no_demo):
    import hetcache_cli.kernels as kernels

    real = kernels.gather_tokens

    def off_by_one(x, idx, **kwargs):
        return real(x, idx, **kwargs) + 1

    monkeypatch.setattr(kernels, "gather_tokens", off_by_one)
    r = invoke("--device", "cpu", "--json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False
    failed = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert [c["name"] for c in failed] == ["kernel gather_tokens (torch)"]
    assert "gather_tokens mismatches the torch reference on cpu float32" in failed[0]["detail"]
    assert "max err 1" in failed[0]["detail"]

    table = invoke("--device", "cpu")
    assert table.exit_code == 1
    assert "FAILED (kernel gather_tokens (torch))" in table.stdout


def test_engine_error_is_a_failed_check_with_the_fix(monkeypatch):
    def not_ready(pool, spec):
        raise NotImplementedError("PARTIAL steps are not implemented yet")

    monkeypatch.setattr(selftest_mod, "_edit", not_ready)
    monkeypatch.setattr(selftest_mod, "kernel_checks", lambda runner, dev, quick: None)
    r = invoke("--device", "cpu", "--quick", "--json")
    assert r.exit_code == 1
    checks = checks_by_name(r)
    assert checks["demo model"]["status"] == "PASS"
    detail = checks["demo edit (hetcache)"]["detail"]
    assert checks["demo edit (hetcache)"]["status"] == "FAIL"
    assert detail.startswith("NotImplementedError: PARTIAL steps are not implemented yet") and "--cache none" in detail


def test_cuda_without_cuda_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = invoke("--device", "cuda")
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0] and "--device cpu" in lines[0]


def test_unknown_device_is_a_usage_error():
    r = invoke("--device", "tpu")
    assert r.exit_code == 2
    assert "--device 'tpu' is not valid" in r.stderr


@pytest.mark.slow
def test_bfloat16_demo_edits_run_on_the_cpu_and_say_so(monkeypatch):
    """What `selftest --device cuda` runs by default, rehearsed on the CPU: HetCache in bfloat16."""
    monkeypatch.setattr(selftest_mod, "kernel_checks", lambda runner, dev, quick: None)
    r = invoke("--device", "cpu", "--quick", "--dtype", "bfloat16", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["environment"]["selftest"]["dtype"] == "bfloat16"
    checks = checks_by_name(r)
    assert "in bfloat16" in checks["demo model"]["detail"]
    for name in ("demo edit (cache none)", "demo edit (hetcache)"):
        assert checks[name]["status"] == "PASS", checks[name]
        assert checks[name]["data"]["dtype"] == "bfloat16" and checks[name]["detail"].startswith("bfloat16, ")
    cached = checks["demo edit (hetcache)"]["data"]
    assert cached["decisions"]["partial"] > 0 and cached["decisions"]["reuse"] > 0


@pytest.mark.slow
def test_a_pipeline_in_another_dtype_fails_the_demo_edit(monkeypatch):
    """The check reads the dtype the transformer's weights really have, not the one asked for."""
    import hetcache_cli.pipeline.model as model

    real = model.load_pipeline
    monkeypatch.setattr(model, "load_pipeline", lambda ref, dev, dtype, offload="none": real(ref, dev, torch.float32, offload))
    monkeypatch.setattr(selftest_mod, "kernel_checks", lambda runner, dev, quick: None)
    r = invoke("--device", "cpu", "--quick", "--dtype", "float16", "--json")
    assert r.exit_code == 1
    detail = checks_by_name(r)["demo edit (hetcache)"]["detail"]
    assert "the transformer ran in float32, not the float16 asked for" in detail


def test_dtype_default_is_what_the_device_gets():
    from hetcache_cli.cli.selftest import _dtype

    assert _dtype(None, torch.device("cuda")) == "bfloat16"
    assert _dtype(None, torch.device("cpu")) == "float32"
    assert _dtype("float16", torch.device("cpu")) == "float16"


def test_unknown_dtype_is_a_usage_error():
    r = invoke("--device", "cpu", "--dtype", "fp8")
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--dtype 'fp8' is not valid: use auto, float32, float16, bfloat16" in lines[0]
