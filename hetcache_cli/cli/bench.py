"""`hetcache bench`: the same edit uncached and with each cache setting, speed and quality side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import StepProgress, handle_errors, print_json, setup_logging, stderr, stdout
from hetcache_cli.cli.edit import flag_values, spec_from_cli

EPILOG = """
Examples:

  hetcache bench assets/demo/input.mp4 --mask assets/demo/mask.png --prompt "a red ball"

  hetcache bench clip.mp4 -m mask.png -p "a red car" --model Wan-AI/Wan2.1-VACE-1.3B-diffusers --methods none,hetcache:fast --repeat 3

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


@handle_errors
def bench(
    video: Annotated[Optional[str], typer.Argument(help="Input video.", show_default=False)] = None,
    mask: opt.Mask = None,
    prompt: opt.Prompt = None,
    spec: opt.SpecFile = None,
    methods: Annotated[
        Optional[str], typer.Option("--methods", help="Comma list of METHOD[:PRESET]; the uncached run is always included.")
    ] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Timed runs per method (median reported).")] = 1,
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
    """Benchmark cache settings against the uncached run: wall time, FLOPs, memory, quality by region."""
    from hetcache_cli.bench.core import DEFAULT_METHODS, parse_methods, run_bench
    from hetcache_cli.bench.report import markdown, write_reports
    from hetcache_cli.pipeline.edit import prepare_edit
    from hetcache_cli.pipeline.model import PipelinePool

    setup_logging(quiet or json_out)
    method_list = parse_methods(methods or DEFAULT_METHODS)
    flags = flag_values(
        video=video, mask=mask, prompt=prompt, model=model, steps=steps, guidance_scale=guidance_scale, seed=seed,
        frames=frames, width=width, height=height, negative_prompt=negative_prompt, device=device, dtype=dtype,
        cache=None, preset=None, schedule=None,
    )
    edit_spec = spec_from_cli(spec, flags, where="bench")
    out_dir = out or Path(f"bench_{Path(edit_spec.video).stem}")
    edit_spec.output = str(out_dir / "none.mp4")
    prep = prepare_edit(edit_spec, overwrite=True)
    pipe, info = PipelinePool().get(edit_spec.model, edit_spec.device, edit_spec.dtype, edit_spec.offload)
    report = run_bench(prep, pipe, info, method_list, repeat, out_dir, warmup=warmup, progress=_Bars(quiet or json_out))
    paths = write_reports(report, out_dir)
    if json_out:
        print_json({k: v for k, v in report.items() if k != "steps_detail"} | {"files": paths})
        return
    if not quiet:
        stdout.print(markdown(report), highlight=False, markup=False)
        stderr.print(f"wrote {paths['markdown']}, {paths['json']}, {paths['plot']} and the videos", highlight=False)
