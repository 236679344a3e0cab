"""`hetcache bench`: the same edit uncached, with our cache settings and with the peers', side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import (
    StepProgress, handle_errors, print_json, quiet_libraries, setup_logging, stderr, stdout,
)  # fmt: skip
from hetcache_cli.cli.edit import flag_values, spec_from_cli

EPILOG = """
Examples:

  hetcache bench assets/demo/input.mp4 --mask assets/demo/mask.png --prompt "a red ball" --repeat 3

  hetcache bench clip.mp4 -m mask.png -p "a red car" --model Wan-AI/Wan2.1-VACE-1.3B-diffusers --methods none,hetcache:fast,diffusers:fbcache=0.1,cache-dit:dbcache

  hetcache bench clip.mp4 -m mask.png -p "a red car" --sweep --methods hetcache,teacache,diffusers:fbcache

  hetcache bench clip.mp4 -m mask.png -p "a red car" --sweep --methods hetcache,teacache+forecast

teacache+forecast is step reuse with hetcache's residual forecast and no PARTIAL step (no K/V caches): where
its front reaches hetcache's on your clip and model, PARTIAL steps are not paying for their memory there.

Methods: none | teacache | teacache+forecast | hetcache[:quality|balanced|fast] | diffusers:fbcache[=THRESHOLD] |
diffusers:magcache[=THRESHOLD] | diffusers:taylorseer[=INTERVAL] | diffusers:seacache[=THRESHOLD] |
diffusers:pab[=RANGE] | diffusers:fastercache | cache-dit:dbcache[=THRESHOLD] |
cache-dit:dbcache+taylorseer[=THRESHOLD] | peers (all of them). cache-dit: pip install -e '.[peers]'.
Writes OUT/bench.md, OUT/bench.json, OUT/bench.png and one video + stats per method.
"""


class _Bars:
    """One progress bar per run, on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bar: StepProgress | None = None

    def start(self, label: str, total: int) -> None:
        self._bar = StepProgress(label, total, quiet=self.quiet).__enter__()

    def update(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(done, total)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


Methods = Annotated[
    Optional[str],
    typer.Option(
        "--methods",
        help="Comma list of methods (see below); the uncached run is always included "
        "[default: none,teacache,hetcache:quality,hetcache:balanced,hetcache:fast,peers].",
    ),
]
Sweep = Annotated[
    bool,
    typer.Option(
        "--sweep",
        help="Sweep each method's knob over a grid (ours: thresholds; peers: their VALUE) and plot each "
        "method's Pareto front; --methods picks the methods [default: all].",
    ),
]


def prepare_bench(spec, flags: dict, out: Path | None, where: str):
    """Spec, output folder and prepared edit of a bench-like command (paths checked before torch loads)."""
    from hetcache_cli.spec.paths import check_paths

    edit_spec = spec_from_cli(spec, flags, where=where)
    out_dir = out or Path(f"{where}_{Path(edit_spec.video).stem}")
    edit_spec.output = str(out_dir / "none.mp4")
    check_paths(edit_spec, overwrite=True)
    from hetcache_cli.pipeline.edit import prepare_edit

    return edit_spec, out_dir, prepare_edit(edit_spec, overwrite=True)


@handle_errors
def bench(
    video: Annotated[Optional[str], typer.Argument(help="Input video.", show_default=False)] = None,
    mask: opt.Mask = None,
    prompt: opt.Prompt = None,
    spec: opt.SpecFile = None,
    methods: Methods = None,
    sweep: Sweep = False,
    repeat: Annotated[int, typer.Option("--repeat", min=0, help="Timed runs per method, median reported (0: only the FLOPs-counted run, whose times are not clean).")] = 1,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder [default: bench_<video stem>].")] = None,
    warmup: Annotated[bool, typer.Option("--warmup/--no-warmup", help="Untimed warm-up first.")] = True,
    model: opt.Model = None,
    steps: opt.Steps = None,
    guidance_scale: opt.Guidance = None,
    seed: opt.Seed = None,
    frames: opt.Frames = None,
    width: opt.Width = None,
    height: opt.Height = None,
    negative_prompt: opt.NegativePrompt = None,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    """Benchmark cache methods, ours and the peers', against the uncached run: time, measured FLOPs, quality by region."""
    from hetcache_cli.bench.methods import DEFAULT_METHODS, parse_methods

    setup_logging(quiet or json_out)
    method_list = parse_methods(methods or DEFAULT_METHODS)
    flags = flag_values(
        video=video, mask=mask, prompt=prompt, model=model, steps=steps, guidance_scale=guidance_scale, seed=seed,
        frames=frames, width=width, height=height, negative_prompt=negative_prompt, device=device, dtype=dtype,
        cache=None, preset=None, schedule=None,
    )  # fmt: skip
    edit_spec, out_dir, prep = prepare_bench(spec, flags, out, "bench")

    from hetcache_cli.bench.core import run_bench
    from hetcache_cli.bench.report import markdown, write_reports
    from hetcache_cli.pipeline.model import PipelinePool

    quiet_libraries()
    pipe, info = PipelinePool().get(edit_spec.model, edit_spec.device, edit_spec.dtype, edit_spec.offload)
    if sweep:
        method_list = sweep_list(method_list if methods else None, pipe, edit_spec.steps)
    report = run_bench(prep, pipe, info, method_list, repeat, out_dir, warmup=warmup, progress=_Bars(quiet or json_out))
    report["sweep"] = sweep
    paths = write_reports(report, out_dir, sweep=sweep)
    if json_out:
        print_json({k: v for k, v in report.items() if k != "steps_detail"} | {"files": paths})
        return
    if not quiet:
        stdout.print(markdown(report), highlight=False, markup=False)
        stderr.print(f"wrote {paths['markdown']}, {paths['json']}, {paths['plot']} and the videos", highlight=False)


def sweep_list(chosen, pipe, steps: int):
    """The uncached run and every grid point of the chosen methods' families (all families when None)."""
    from hetcache_cli.bench.methods import Method
    from hetcache_cli.bench.sweep import FAMILIES, sweep_methods
    from hetcache_cli.errors import InputError

    families = FAMILIES if chosen is None else list(dict.fromkeys(m.family for m in chosen if m.method != "none"))
    pipe.scheduler.set_timesteps(steps, device=pipe._execution_device)
    try:
        return [Method("none")] + sweep_methods(families, pipe.transformer, pipe.scheduler.timesteps)
    except ValueError as exc:
        raise InputError(f"--sweep: {exc}") from exc
