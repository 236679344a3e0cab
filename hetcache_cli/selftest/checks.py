"""Will this machine work? An environment report and checks: each kernel against its torch
reference, and the embedded demo edit uncached and with HetCache.

Every check ends PASS, FAIL or SKIP; a FAIL's detail says what to fix. The Triton kernels
run in the interpreter on a CPU only when TRITON_INTERPRET=1 was set before the command:
the mode is pinned when the kernels are first built, so it is never switched here.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from hetcache_cli import __version__, kernels
from hetcache_cli.selftest.kernel_checks import BUG, FAIL, PASS, SKIP, kernel_checks

DEMO_PROMPT = "a red ball"
# explicit schedules, so that partial and reuse steps certainly run
QUICK_STEPS, QUICK_FRAMES, QUICK_SCHEDULE = 4, 5, "FPRP"
FULL_STEPS, FULL_SCHEDULE = 10, "FFPPRPPRPF"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    seconds: float = 0.0
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"name": self.name, "status": self.status, "detail": self.detail, "seconds": round(self.seconds, 3)}
        if self.data:
            out["data"] = self.data
        return out


@dataclass
class Report:
    environment: dict
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def to_dict(self) -> dict:
        return {"environment": self.environment, "checks": [c.to_dict() for c in self.checks], "ok": self.ok}


class _Runner:
    """Times each check and turns an exception into a FAIL whose detail carries the fix."""

    def __init__(self, on_start: Callable[[str], None] | None) -> None:
        self.checks: list[Check] = []
        self._on_start = on_start

    def run(self, name: str, fn: Callable[[], tuple], fix: str) -> Check:
        if self._on_start is not None:
            self._on_start(name)
        start = time.perf_counter()
        try:
            status, detail, *data = fn()
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            status, detail, data = FAIL, f"{type(exc).__name__}: {first}; {fix}", []
        check = Check(name, status, detail, time.perf_counter() - start, data[0] if data else {})
        self.checks.append(check)
        return check


def run_selftest(
    device: torch.device, quick: bool, on_start: Callable[[str], None] | None = None, dtype: str = "float32"
) -> Report:
    """`dtype`: the demo edits' transformer dtype by name (`hetcache edit --dtype`; the VAE stays float32)."""
    env = environment(device)
    env["selftest"] = {"device": str(device), "quick": quick, "dtype": dtype}
    runner = _Runner(on_start)
    runner.run("device", lambda: device_check(device), "reinstall a torch build that matches the driver")
    runner.run("ffmpeg", lambda: ffmpeg_check(env["ffmpeg"]), "pip install --force-reinstall imageio-ffmpeg")
    runner.run("attention backend", lambda: attention_check(env["attention_backends"]), BUG)
    kernel_checks(runner, device, quick)
    demo_checks(runner, device, quick, dtype)
    return Report(env, runner.checks)


# ---- environment ----------------------------------------------------------------------


def environment(device: torch.device) -> dict:
    import diffusers
    import transformers

    cuda = torch.cuda.is_available()
    gpu = None
    if cuda:  # the selected GPU, or the first one when the selftest runs on the CPU
        try:
            props = torch.cuda.get_device_properties(device if device.type == "cuda" else 0)
            capability = f"{props.major}.{props.minor}"
            gpu = {"name": props.name, "total_memory_bytes": props.total_memory, "capability": capability}
        except Exception as exc:  # a broken driver: the `device` check says what to do
            gpu = {"error": f"{type(exc).__name__}: {exc}"}
    status = kernels.triton_status()
    return {
        "hetcache": __version__,
        "python": {"version": platform.python_version(), "executable": sys.executable, "platform": platform.platform()},
        "torch": {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "cuda_available": cuda,
            "cuda_devices": torch.cuda.device_count() if cuda else 0,
            "gpu": gpu,
            "cpu_threads": torch.get_num_threads(),
        },
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "triton": {"mode": status.mode, "version": status.version, "reason": status.reason},
        "ffmpeg": _ffmpeg(),
        "attention_backends": attention_backends(device),
    }


def _ffmpeg() -> dict:
    try:
        import imageio_ffmpeg

        return {"path": imageio_ffmpeg.get_ffmpeg_exe(), "version": imageio_ffmpeg.get_ffmpeg_version()}
    except Exception as exc:
        return {"path": None, "version": None, "error": f"{type(exc).__name__}: {exc}"}


def attention_backends(device: torch.device) -> dict:
    """diffusers' registered backends: which run a tiny call here (hub ones are never
    called: they download a kernel); the others with the reason they cannot."""
    try:
        from diffusers.models import attention_dispatch as ad

        registry = ad._AttentionBackendRegistry
        names = registry.list_backends()
        active = getattr(registry._active_backend, "value", str(registry._active_backend))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        q = torch.randn(1, 8, 2, 64, device=device, dtype=dtype)  # [B, S, H, d]
    except Exception as exc:  # private API (a future diffusers may move it), or a broken device
        return {"active": None, "usable": [], "unusable": {}, "error": f"cannot probe them: {exc}"}
    usable, unusable = [], {}
    for backend in names:
        try:
            ad._check_attention_backend_requirements(backend)
            if "hub" in backend.value:
                usable.append(f"{backend.value} (downloads a kernel from the Hub on first use)")
                continue
            for constraint in registry._constraints.get(backend, []):
                constraint(query=q, key=q, value=q, attn_mask=None, is_causal=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ad.dispatch_attention_fn(q, q, q, backend=backend)
            usable.append(backend.value)
        except Exception as exc:
            unusable[backend.value] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return {"active": active, "probe_dtype": str(dtype).removeprefix("torch."), "usable": usable, "unusable": unusable}


def device_check(device: torch.device) -> tuple:
    a = torch.arange(12.0).reshape(3, 4)
    got = (a.to(device) @ a.T.to(device)).cpu()
    if not torch.equal(got, a @ a.T):
        return FAIL, f"a 3x4 matmul on {device} gives wrong numbers: reinstall torch or check the device"
    if device.type != "cuda":
        return PASS, f"cpu, {torch.get_num_threads()} threads"
    props = torch.cuda.get_device_properties(device)
    return PASS, f"{device} {props.name}, {props.total_memory / 2**30:.1f} GiB, sm_{props.major}{props.minor}"


def ffmpeg_check(info: dict) -> tuple:
    if info.get("path") is None:
        fix = "pip install --force-reinstall imageio-ffmpeg, or set IMAGEIO_FFMPEG_EXE to an ffmpeg binary"
        return FAIL, f"no ffmpeg ({info.get('error')}): {fix}"
    return PASS, f"{info['version']} at {info['path']}"


def attention_check(info: dict) -> tuple:
    if info.get("error"):
        return SKIP, f"diffusers attention backends unknown ({info['error']})"
    usable = [name.split(" ")[0] for name in info["usable"]]
    active = info["active"]
    if active not in usable:
        why = info["unusable"].get(active, "not registered")
        return FAIL, (
            f"the active attention backend {active!r} (DIFFUSERS_ATTN_BACKEND) cannot run here ({why}): "
            "unset DIFFUSERS_ATTN_BACKEND or install what it needs"
        )
    return PASS, f"active {active}; usable here: {', '.join(usable)}"


# ---- demo edit ------------------------------------------------------------------------


def demo_checks(runner: _Runner, dev: torch.device, quick: bool, dtype: str = "float32") -> None:
    from hetcache_cli.pipeline.model import PipelinePool
    from hetcache_cli.resources import demo_dir
    from hetcache_cli.spec.schema import EditSpec

    steps, schedule = (QUICK_STEPS, QUICK_SCHEDULE) if quick else (FULL_STEPS, FULL_SCHEDULE)
    device = dev.type if dev.index is None else str(dev)
    pool = PipelinePool()
    with tempfile.TemporaryDirectory(prefix="hetcache-selftest-") as tmp:

        def spec(name: str, n_steps: int, cache: dict) -> EditSpec:
            out = Path(tmp) / f"{name}.mp4"
            return EditSpec(
                video=str(demo_dir() / "input.mp4"), mask=str(demo_dir() / "mask.png"), prompt=DEMO_PROMPT,
                output=str(out), steps=n_steps, frames=QUICK_FRAMES if quick else None, device=device, dtype=dtype,
                cache=cache,
            )  # fmt: skip

        def load() -> tuple:
            start = time.perf_counter()
            pool.get(None, device, dtype)
            detail = f"embedded model loaded on {device} in {dtype} in {time.perf_counter() - start:.1f} s"
            if quick:
                return PASS, detail + "; no warm-up (--quick): timings include first-call overhead"
            _edit(pool, spec("warmup", 2, {"method": "hetcache", "schedule": "FP"}))
            return PASS, detail + "; warm-up edit done (not timed)"

        fix_model = "reinstall hetcache from a full checkout (assets/model and assets/demo)"
        if runner.run("demo model", load, fix_model).status != PASS:
            for name in ("demo edit (cache none)", "demo edit (hetcache)"):
                runner.run(name, lambda: (SKIP, "the demo model did not load (see 'demo model')"), BUG)
            return
        fix_none = "the uncached edit does not work here: check torch/diffusers versions / " + BUG
        base = runner.run(
            "demo edit (cache none)", lambda: _checked_edit(pool, spec("uncached", steps, {"method": "none"})), fix_none
        )
        fix_cache = "HetCache does not work here: use `--cache none` meanwhile and " + BUG
        cached = spec("hetcache", steps, {"method": "hetcache", "preset": "fast", "schedule": schedule})
        runner.run("demo edit (hetcache)", lambda: _checked_edit(pool, cached, base.data), fix_cache)


def _edit(pool, spec):
    from hetcache_cli.pipeline.edit import prepare_edit, run_edit

    prep = prepare_edit(spec, overwrite=True)
    pipe, info = pool.get(spec.model, spec.device, spec.dtype)
    return prep, run_edit(prep, pipe, info)


def _checked_edit(pool, spec, baseline: dict | None = None) -> tuple:
    """Run one demo edit and check its video and statistics against the source and the schedule."""
    from hetcache_cli.io.video import read_video

    prep, result = _edit(pool, spec)
    plan, problems = prep.plan, []
    clip = read_video(result.output)
    got = (clip.num_frames, clip.height, clip.width, round(clip.fps, 3))
    want = (plan.frames, plan.src_height, plan.src_width, round(prep.fps, 3))
    if got != want:
        problems.append(f"the video is {got} (frames, height, width, fps), the source's edited part is {want}")
    stats = json.loads(Path(result.stats_path).read_text())
    settings = stats["settings"]
    if (settings["frames"], settings["height"], settings["width"]) != want[:3]:
        problems.append(f"stats settings say {settings['frames']} frames {settings['width']}x{settings['height']}")
    branches = ("cond", "uncond") if spec.guidance_scale > 1 else ("cond",)
    records = {(s["step"], s["branch"]): s["decision"] for s in stats["steps"]}
    expected = {(i, b) for i in range(spec.steps) for b in branches}
    if set(records) != expected or len(stats["steps"]) != len(expected):
        problems.append(f"stats hold {len(stats['steps'])} step records, expected {spec.steps} steps x {len(branches)}")
    summary = stats.get("summary", {})
    missing = [k for k in ("flops", "flops_full", "flops_ratio", "wall_s", "decisions") if k not in summary]
    if missing:
        problems.append(f"stats summary lacks {missing}")
        return FAIL, "; ".join(problems)
    schedule = spec.cache_config().schedule or "F" * spec.steps
    letters = {"full": "F", "partial": "P", "reuse": "R"}
    ran = "".join(letters.get(records.get((i, branches[0]), ""), "?") for i in range(spec.steps))
    if ran != schedule:
        problems.append(f"the steps ran as {ran}, the schedule asked for {schedule}")
    pipe = pool.get(spec.model, spec.device, spec.dtype)[0]  # the pipeline the edit ran on, already loaded
    # a projection's weight, not `transformer.dtype`: diffusers keeps some modules in float32 on purpose
    ran_in = str(pipe.transformer.blocks[0].attn1.to_q.weight.dtype).removeprefix("torch.")
    if ran_in != spec.dtype:
        problems.append(f"the transformer ran in {ran_in}, not the {spec.dtype} asked for")
    ratio = summary["flops_ratio"]
    if schedule == "F" * spec.steps and abs(ratio - 1.0) > 1e-6:
        problems.append(f"an all-full run reports a FLOPs ratio of {ratio:.4f}, not 1")
    if schedule != "F" * spec.steps and not ratio < 1.0:
        problems.append(f"partial and reuse steps did not lower the FLOPs (ratio {ratio:.4f})")
    if problems:
        return FAIL, "; ".join(problems)
    wall, tf_ms = summary["wall_s"], summary.get("transformer_ms")
    data = {"dtype": spec.dtype, "wall_s": round(wall, 3), "transformer_ms": tf_ms, "flops_ratio": round(ratio, 4),
            "decisions": summary["decisions"]}  # fmt: skip
    d = summary["decisions"]
    detail = (
        f"{spec.dtype}, {plan.frames} frames {plan.src_width}x{plan.src_height} @ {prep.fps:g} fps, "
        f"schedule {schedule}: "
        f"{d['full']} full / {d['partial']} partial / {d['reuse']} reuse forwards, "
        f"{ratio:.0%} of uncached FLOPs, {wall:.2f} s"
    )
    if baseline and baseline.get("wall_s"):
        data["speedup"] = round(baseline["wall_s"] / wall, 3)
        detail += f" vs {baseline['wall_s']:.2f} s uncached ({data['speedup']:.2f}x"
        if baseline.get("transformer_ms") and tf_ms:
            data["transformer_speedup"] = round(baseline["transformer_ms"] / tf_ms, 3)
            detail += f", transformer {data['transformer_speedup']:.2f}x"
        detail += ")"
    return PASS, detail, data
