"""`hetcache calibrate`: the quality / balanced / fast presets of a model, measured on your clips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import handle_errors, print_json, quiet_libraries, setup_logging, stderr, stdout
from hetcache_cli.errors import InputError

EPILOG = """
Examples:

  hetcache calibrate assets/demo/input.mp4 --mask assets/demo/mask.png --prompt "a red ball"

  hetcache calibrate --model Wan-AI/Wan2.1-VACE-1.3B-diffusers --spec clips/car.yaml --spec clips/dog.yaml --frames 33 --steps 30

  hetcache calibrate clip.mp4 -m mask.png -p "a red car" --model ./wan-vace-1.3b --targets quality=38,balanced=32,fast=27

  hetcache calibrate clip.mp4 -m mask.png -p "a red car" --model ./wan-vace-1.3b --step-reuse

Runs the uncached edit and a grid of HetCache settings on every clip, then writes, for each preset,
the cheapest setting (largest measured FLOPs cut) whose worst PSNR in the mask and its paste band
(what reaches the output after paste-back) against the uncached output
meets its target (defaults: quality 40, balanced 33, fast 28 dB). `--preset NAME` then uses them for
that model. --write auto puts them in a local model folder's hetcache_defaults.json (if writable), else
in the user config folder ($HETCACHE_CONFIG_DIR, else ~/.config/hetcache) under models/<model>/.
"""

Specs = Annotated[
    Optional[list[Path]],
    typer.Option("--spec", help="YAML spec of one or more edits to calibrate on; repeat for more clips."),
]
Targets = Annotated[
    Optional[str],
    typer.Option("--targets", help="PSNR targets in dB (mask + paste band), e.g. quality=40,balanced=33,fast=28 [default: those]."),
]
Write = Annotated[
    str,
    typer.Option("--write", help="auto | model | user: the model folder's hetcache_defaults.json or the user config folder's."),
]
PresetsFile = Annotated[
    Optional[Path], typer.Option("--presets-file", help="Write the presets into this JSON file instead (overrides --write).")
]
StepReuse = Annotated[
    bool,
    typer.Option("--step-reuse",
                 help="Also run step reuse with the residual forecast (teacache+forecast: no PARTIAL step, no K/V "
                      "caches) over its grid, 5 more runs per clip, and say for each preset whether it meets the "
                      "target at a larger cut than HetCache on these clips."),
]
Out = Annotated[Optional[Path], typer.Option("--out", help="Folder for the runs' videos and calibration.json [default: calibrate_<video stem>].")]


def clip_specs(video, specs: list[Path] | None, flags: dict) -> list:
    """One EditSpec per clip: the positional clip (with --mask/--prompt), then every edit of every --spec."""
    from hetcache_cli.cli.edit import spec_from_cli
    from hetcache_cli.spec.load import build_spec, load_spec_file, merge_values

    out = []
    if video is not None or not specs:
        out.append(spec_from_cli(None, {**flags, **({"video": video} if video else {})}, where="calibrate"))
    for path in specs or []:
        edits = load_spec_file(path)
        out += [build_spec(merge_values(values, flags), f"{path}[{i}]") for i, values in enumerate(edits)]
    models = {s.model for s in out}
    if len(models) > 1:
        raise InputError(f"the clips name different models {sorted(map(str, models))}: calibrate one model at a time (--model)")
    return out


def presets_path(model: str | None, write: str, explicit: Path | None) -> Path:
    from hetcache_cli.spec.model_defaults import folder_defaults_path, is_local_model, user_defaults_path

    if explicit is not None:
        return explicit
    if write not in ("auto", "model", "user"):
        raise InputError(f"--write {write!r} is not valid: use auto, model or user")
    folder = folder_defaults_path(model)
    if write == "model":
        if folder is None:
            raise InputError(f"model {model!r} is a hub id, it has no folder of its own: use --write user")
        return folder
    if write == "auto" and is_local_model(model) and folder is not None and _writable(folder.parent):
        return folder
    return user_defaults_path(model)


@handle_errors
def calibrate(
    video: Annotated[Optional[str], typer.Argument(help="A clip to calibrate on (or use --spec).", show_default=False)] = None,
    mask: opt.Mask = None,
    prompt: opt.Prompt = None,
    spec: Specs = None,
    targets: Targets = None,
    write: Write = "auto",
    presets_file: PresetsFile = None,
    out: Out = None,
    step_reuse: StepReuse = False,
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
    """Measure a model's quality / balanced / fast presets on your clips and write them for --preset."""
    from hetcache_cli.bench.calibrate import parse_targets
    from hetcache_cli.cli.edit import flag_values
    from hetcache_cli.spec.paths import check_paths

    setup_logging(quiet or json_out)
    goal = parse_targets(targets)
    flags = flag_values(
        mask=mask, prompt=prompt, model=model, steps=steps, guidance_scale=guidance_scale, seed=seed, frames=frames,
        width=width, height=height, negative_prompt=negative_prompt, device=device, dtype=dtype,
        cache=None, preset=None, schedule=None,
    )  # fmt: skip
    specs = clip_specs(video, spec, flags)
    target = presets_path(specs[0].model, write, presets_file)
    out_dir = out or Path(f"calibrate_{Path(specs[0].video).stem}")
    for i, s in enumerate(specs):
        s.output = str((out_dir / f"clip{i}" if len(specs) > 1 else out_dir) / "none.mp4")
        check_paths(s, overwrite=True)

    from hetcache_cli.bench.calibrate import calibrate as run_calibration
    from hetcache_cli.bench.calibrate import write_presets
    from hetcache_cli.cli.bench import _Bars
    from hetcache_cli.io.atomic import atomic_write_text
    from hetcache_cli.pipeline.edit import prepare_edit
    from hetcache_cli.pipeline.model import PipelinePool

    preps = [prepare_edit(s, overwrite=True) for s in specs]
    quiet_libraries()
    pipe, info = PipelinePool().get(specs[0].model, specs[0].device, specs[0].dtype)
    result = run_calibration(preps, pipe, info, goal, out_dir, progress=_Bars(quiet or json_out),
                             step_reuse=step_reuse)
    atomic_write_text(out_dir / "calibration.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    write_presets(target, result)
    if json_out:
        print_json(result.to_dict() | {"presets_file": str(target)})
        return
    if not quiet:
        stdout.print(summary_text(result), highlight=False, markup=False)
        stderr.print(f"wrote the presets into {target}; `--preset NAME` uses them for this model", highlight=False)


def summary_text(result) -> str:
    lines = ["| candidate | schedule | FLOPs cut | PSNR visible (worst clip) | PSNR in (worst clip) |",
             "|---|---|---|---|---|"]
    for row in sorted(result.candidates + result.step_reuse_candidates, key=lambda r: r["flops_cut"] or 0.0):
        shown = ["-" if row[k] is None else f"{row[k]:.1f}" for k in ("psnr_visible_min", "psnr_inside_min")]
        lines.append(f"| {row['method']} | {row['schedule']} | {row['flops_cut']:.3f} | {shown[0]} | {shown[1]} |")
    lines.append("")
    for name, chosen in result.chosen.items():
        lines.append(f"{name}: {chosen['candidate']} ({chosen['flops_cut']:.2f}x fewer FLOPs, "
                     f"{chosen['psnr_visible_min']:.1f} dB in the mask and its paste band "
                     f">= {chosen['target']:g} dB)")  # fmt: skip
    for name, why in result.missed.items():
        lines.append(f"{name}: not written ({why}); the shipped preset stays in use")
    lines += step_reuse_lines(result)
    return "\n".join(lines)


def step_reuse_lines(result) -> list[str]:
    """With --step-reuse: per preset, whether step reuse with the forecast meets its target at a larger cut."""
    if result.step_reuse is None:
        return []
    lines = [""]
    for name, pick in result.step_reuse.items():
        ours = result.chosen.get(name)
        if pick is None:
            lines.append(f"{name}: step reuse with the forecast reaches no point of {result.targets[name]:g} dB")
        elif ours is None or pick["flops_cut"] > ours["flops_cut"]:
            shown = ", ".join(f"{k}: {v}" for k, v in pick["settings"].items()
                              if k in ("method", "forecast", "reuse_threshold", "full_threshold"))
            theirs = "none" if ours is None else f"{ours['flops_cut']:.2f}x"
            lines.append(f"{name}: step reuse with the forecast meets {pick['target']:g} dB at "
                         f"{pick['flops_cut']:.2f}x (HetCache {theirs}), with no K/V caches: on these clips "
                         f"PARTIAL steps do not pay at this target; cache: {{{shown}}}")
        else:
            lines.append(f"{name}: HetCache {ours['flops_cut']:.2f}x, step reuse with the forecast "
                         f"{pick['flops_cut']:.2f}x at {pick['target']:g} dB")
    return lines


def _writable(folder: Path) -> bool:
    import os

    return folder.is_dir() and os.access(folder, os.W_OK)
