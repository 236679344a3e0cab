"""`hetcache edit`: one masked edit from flags and/or a YAML spec."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import StepProgress, handle_errors, print_json, quiet_libraries, setup_logging, stdout
from hetcache_cli.cli.parallel import Parallel, RankTimeout, parallel_layout, run_parallel
from hetcache_cli.errors import InputError
from hetcache_cli.spec.load import build_spec, load_spec_file, merge_values
from hetcache_cli.spec.paths import check_paths

EPILOG = """
Examples:

  hetcache edit assets/demo/input.mp4 --mask assets/demo/mask.png --prompt "a red ball"

  hetcache edit clip.mp4 -m mask.png -p "a red vintage car" --model Wan-AI/Wan2.1-VACE-1.3B-diffusers --preset fast

  hetcache edit clip.mp4 --box 100,80,260,240@0 --box 300,90,460,250@48 -p "a red vintage car"

  hetcache edit --spec configs/example_edit.yaml --steps 20 --json

  hetcache edit long.mp4 -m track.mp4 -p "a red car" --window-frames 81 --window-overlap 16 --resume

  hetcache edit clip.mp4 -m mask.png -p "a red car" --model Wan2.2-VACE-Fun-A14B-diffusers --offload group --dry-run

  hetcache edit street.mp4 --box 400,220,560,400 -p "an empty street" --mask-fill gray --dry-run

  hetcache edit long.mp4 -m track.mp4 -p "a red car" --preview --plot

  hetcache edit long.mp4 -m track.mp4 -p "a red car" --preview-frame 240

The output keeps the video's size, frame count, frame rate and audio (--no-audio drops it); only the
masked region changes. The model works on a crop around the mask (--crop full: the whole frame),
scaled to at most max_area pixels, and the result is stitched back at full resolution. A clip longer
than --window-frames is edited in overlapping windows (every frame kept); an interrupted long edit
keeps its finished windows beside the output: rerun with --resume.

--preview edits one window only (the one whose mask covers the most pixels, or the one holding
--preview-frame) with every setting of the full run, writes <output stem>.preview.png (source, mask
outlined and edit for a few frames), .preview.mp4 and .preview.stats.json, prints the window's time
and the estimated time of the whole edit, and writes no output video. --plot draws what the cache
did (steps, tokens per class, FLOPs, time per window) into <output stem>.cache.png.
"""

Preview = Annotated[
    bool,
    typer.Option("--preview", help="Edit one window only (the mask's largest) and write a preview; no output video."),
]
PreviewFrame = Annotated[
    Optional[int],
    typer.Option(
        "--preview-frame", metavar="FRAME", help="Preview the window holding clip frame FRAME (implies --preview)."
    ),
]
Plot = Annotated[
    bool,
    typer.Option("--plot", help="Also draw what the cache did into <output stem>.cache.png (needs matplotlib)."),
]


def flag_values(**flags) -> dict:
    """CLI flags as spec values; None means 'not given'."""
    cache = {"method": flags.pop("cache"), "preset": flags.pop("preset"), "schedule": flags.pop("schedule")}
    values = {k: v for k, v in flags.items() if v is not None}
    cache = {k: v for k, v in cache.items() if v is not None}
    if cache:
        values["cache"] = cache
    return values


def spec_from_cli(spec_file: Path | None, flags: dict, where: str = "edit"):
    base: dict = {}
    if spec_file is not None:
        edits = load_spec_file(spec_file)
        if len(edits) != 1:
            raise InputError(f"{spec_file} holds {len(edits)} edits; run them with `hetcache run {spec_file}`")
        base = edits[0]
        where = str(spec_file)
    return build_spec(merge_values(base, flags), where)


def execute(spec, pool, overwrite: bool, quiet: bool, label: str = "denoising", resume: bool = False, prep=None,
            parallel=None):  # fmt: skip
    """Check inputs (unless `prep` holds them checked), load (or reuse) the model, run the edit with one progress
    bar over windows x steps; `parallel`: rank 0's driver of a --parallel edit."""
    from hetcache_cli.pipeline.edit import prepare_edit, run_edit

    prep = prep if prep is not None else prepare_edit(spec, overwrite=overwrite)
    quiet_libraries()
    pipe, info = pool.get(spec.model, spec.device, spec.dtype, spec.offload)
    n = len(prep.windows)
    with StepProgress(label, spec.steps * n, quiet=quiet) as bar:

        def update(done: int, total: int) -> None:
            window = min(done // spec.steps + 1, n)
            bar.update(done, total, None if n == 1 else f"{label} (window {window}/{n})")

        return run_edit(prep, pipe, info, progress=update, resume=resume, parallel=parallel)


def result_summary(result) -> dict:
    """`--json`: the edit's `RunSummary` (cache/summary.py) with what was written."""
    from hetcache_cli.cache.summary import RunSummary

    s = result.stats["summary"]
    run = RunSummary.from_dict(s)
    settings = result.stats["settings"]
    return {
        "schema_version": s["schema_version"],
        "output": str(result.output),
        "stats": str(result.stats_path),
        "frames": settings["frames"],
        "width": settings["width"],
        "height": settings["height"],
        "fps": settings["fps"],
        "rate": settings["rate"],
        "cache": settings["cache"]["method"],
        "wall_s": round(s["wall_s"], 3),
        "flops_ratio": round(run.flops_ratio, 4),
        "decisions": dict(run.decisions),
        "windows": run.windows,
        "experts": {name: e.schedule for name, e in run.experts.items()},
    }


def show_plan(spec, pool, overwrite: bool, json_out: bool) -> None:
    from hetcache_cli.pipeline.dry_run import plan_edit
    from hetcache_cli.pipeline.edit import prepare_edit

    prep = prepare_edit(spec, overwrite=True)  # a dry run writes nothing: an existing output is only noted
    quiet_libraries()
    pipe, info = pool.get(spec.model, spec.device, spec.dtype, spec.offload)
    plan = plan_edit(prep, pipe)
    if not overwrite and Path(spec.output).exists():
        plan["notes"].append(f"{spec.output} exists: the edit itself needs --overwrite")
    if json_out:
        print_json(plan)
        return
    t, d, windows, mem, gpu = plan["tokens"], plan["decisions"], plan["windows"], plan["cache_memory"], plan["memory"]
    lines = [
        f"dry run: {plan['frames']} frames {plan['width']}x{plan['height']} @ {plan['fps']} fps, {spec.steps} "
        f"steps x {plan['branches']} branch(es), cache {plan['cache']['method']}, {len(windows)} window(s), "
        f"crop {plan['crop']}, offload {plan['offload']}",
        f"schedule  {plan['schedule']}  ({d['full']} full, {d['partial']} partial, {d['reuse']} reuse forwards)",
    ]
    if len(plan["experts"]) > 1:
        for name, e in plan["experts"].items():
            lines.append(f"  {name:<13} steps {e['first_step']}-{e['last_step']}: {e['schedule']}")
    if len(windows) == 1:
        lines.append(f"crop      {_crop_text(windows[0]['crop'])}")
        lines.append(
            f"tokens    {t['total']} total: {t['generative']} generative, {t['margin']} margin, "
            f"{t['context']} context; {t['active']} computed on partial steps"
        )
    else:
        for w in windows:
            wt = w["tokens"]
            lines.append(
                f"window {w['index']:<3} frames {w['start']}-{w['stop'] - 1} ({w['known']} known, "
                f"{w['shared'] - w['known']} blended" + (f", {w['pad']} padded" if w["pad"] else "")
                + f"): crop {_crop_text(w['crop'])}; {wt['total']} tokens, {wt['generative']} generative, "
                f"{wt['active']} on partial steps, {w['flops'] / 1e12:.3g} TF ({w['flops_ratio']:.0%})"
            )
    streams = plan["audio"]["streams"]
    lines.append(
        "audio     " + (", ".join(f"{a['codec']} ({a['action']})" for a in streams) if streams else
                        f"dropped ({plan['audio']['dropped']} stream(s))" if plan["audio"]["dropped"] else "none")
    )  # fmt: skip
    st = plan["stages"]
    lines.append(
        f"stages    read {plan['frames']} frames once; text encoded once; per window: one VAE encode (inactive and "
        f"reactive batched), {spec.steps} step{'s' if spec.steps != 1 else ''}, VAE decode of {st['vae_decode_fraction']:.0%} of the crop "
        f"({st['vae_decode']}), composite, one segment written; then the segments joined"
        + (" and the audio muxed" if streams else "")
    )
    lines += [
        f"FLOPs     {plan['flops'] / 1e12:.3g} TF = {plan['flops_ratio']:.0%} of uncached "
        f"({plan['flops_full'] / 1e12:.3g} TF)",
        f"cache     {mem['cache'] / 2**20:.1f} MiB K/V and residual ({mem['host'] / 2**20:.1f} MiB of it in host "
        f"memory) + {mem['text'] / 2**20:.1f} MiB text K/V"
        + (" (one window at a time)" if len(windows) > 1 else "")
        + (", per expert (freed at the switch)" if len(plan["experts"]) > 1 else "")
        + ("" if plan["cache_memory_fits"] else "  (exceeds max_cache_memory)"),
        f"memory    {gpu['gpu_bytes'] / 2**20:.1f} MiB on {info['device']} (estimate: weights "
        f"{gpu['gpu_weights_bytes'] / 2**20:.1f}, caches {gpu['gpu_cache_bytes'] / 2**20:.1f}, activations "
        f"{gpu['gpu_activation_bytes'] / 2**20:.1f} MiB), {gpu['host_bytes'] / 2**20:.1f} MiB offloaded to host memory",
        *[f"note      {n}" for n in plan["notes"]],
        f"output    {plan['output']} (not written)",
    ]
    stdout.print("\n".join(lines), highlight=False)


def _crop_text(crop: dict) -> str:
    (x0, y0, x1, y1), (w, h), (mw, mh) = crop["box"], crop["size"], crop["model_size"]
    return f"{w}x{h} at ({x0},{y0})-({x1},{y1}) -> model {mw}x{mh}, scale {crop['scale']:.2f}"


@handle_errors
def edit(
    video: Annotated[Optional[str], typer.Argument(help="Input video (any format ffmpeg reads).", show_default=False)] = None,
    mask: opt.Mask = None,
    box: opt.Box = None,
    prompt: opt.Prompt = None,
    output: opt.Output = None,
    spec: opt.SpecFile = None,
    model: opt.Model = None,
    steps: opt.Steps = None,
    guidance_scale: opt.Guidance = None,
    guidance_scale_2: opt.Guidance2 = None,
    seed: opt.Seed = None,
    frames: opt.Frames = None,
    window_frames: opt.WindowFrames = None,
    window_overlap: opt.WindowOverlap = None,
    window_color_match: opt.WindowColorMatch = None,
    width: opt.Width = None,
    height: opt.Height = None,
    max_area: opt.MaxArea = None,
    crop: opt.Crop = None,
    crop_context: opt.CropContext = None,
    crop_min_size: opt.CropMinSize = None,
    mask_fill: opt.MaskFill = None,
    audio: opt.Audio = None,
    negative_prompt: opt.NegativePrompt = None,
    cache: opt.Cache = None,
    preset: opt.Preset = None,
    schedule: opt.Schedule = None,
    stats: opt.Stats = None,
    paste_back: opt.PasteBack = None,
    vae_decode: opt.VaeDecode = None,
    vae_tiling: opt.VaeTiling = None,
    mask_threshold: opt.MaskThreshold = None,
    mask_invert: opt.MaskInvert = None,
    mask_dilation: opt.MaskDilation = None,
    crf: opt.Crf = None,
    overwrite: opt.Overwrite = False,
    resume: opt.Resume = False,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    offload: opt.Offload = None,
    dry_run: opt.DryRun = False,
    preview: Preview = False,
    preview_frame: PreviewFrame = None,
    plot: Plot = False,
    parallel: Parallel = None,
    rank_timeout: RankTimeout = None,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    """Edit the masked region of a video with Wan-VACE, accelerated by HetCache."""
    setup_logging(quiet or json_out)
    flags = flag_values(
        video=video, mask=mask, box=box or None, prompt=prompt, output=output, model=model, steps=steps,
        guidance_scale=guidance_scale, seed=seed, frames=frames, width=width, height=height, max_area=max_area, crop=crop,
        crop_context=crop_context, crop_min_size=crop_min_size, mask_fill=mask_fill, audio=audio,
        window_frames=window_frames, window_overlap=window_overlap, window_color_match=window_color_match,
        negative_prompt=negative_prompt, stats=stats, paste_back=paste_back, vae_decode=vae_decode,
        vae_tiling=vae_tiling, mask_threshold=mask_threshold, mask_invert=mask_invert, mask_dilation=mask_dilation,
        crf=crf, device=device, dtype=dtype,
        cache=cache, preset=preset, schedule=schedule, guidance_scale_2=guidance_scale_2, offload=offload,
    )
    edit_spec = spec_from_cli(spec, flags)
    preview = preview or preview_frame is not None
    layout = parallel_layout(parallel, preview, dry_run, rank_timeout) if parallel is not None else None
    if preview and (dry_run or resume):
        other = "--dry-run" if dry_run else "--resume"
        raise InputError(f"--preview runs one window and writes no output; drop {other}")
    # bad paths fail here, before torch is imported; a preview or a dry run never writes the output: it may exist
    output, _ = check_paths(edit_spec, overwrite or preview or dry_run)
    if plot:
        from hetcache_cli.report.cache_plot import missing_matplotlib

        if (problem := missing_matplotlib()) is not None:
            raise InputError(problem)
    if preview:
        from hetcache_cli.report.preview import check_preview

        paths = check_preview(output, preview_frame, plot)
        run_preview(edit_spec, paths, preview_frame, quiet, json_out)
        return

    from hetcache_cli.pipeline.model import PipelinePool

    if dry_run:
        show_plan(edit_spec, PipelinePool(), overwrite, json_out)
        return
    if layout is not None:
        result = run_parallel(edit_spec, *layout, overwrite, rank_timeout, lambda prep, driver: execute(
            edit_spec, PipelinePool(), overwrite, quiet or json_out, resume=resume, prep=prep, parallel=driver))
        if result is None:  # a rank other than 0: rank 0 reports
            return
    else:
        result = execute(edit_spec, PipelinePool(), overwrite, quiet or json_out, resume=resume)
    summary = result_summary(result)
    if plot:
        from hetcache_cli.report.cache_plot import write_cache_plot

        summary["plot"] = str(write_cache_plot(output.with_name(f"{output.stem}.cache.png"), result.stats))
    if json_out:
        print_json(summary)
    elif not quiet:
        d = summary["decisions"]
        experts = summary["experts"]
        per_expert = "; ".join(f"{n} {s}" for n, s in experts.items()) if len(experts) > 1 else ""
        stdout.print(
            f"wrote {summary['output']} ({summary['frames']} frames {summary['width']}x{summary['height']} "
            f"@ {summary['fps']:.6g} fps"
            + (f", {summary['windows']} windows" if summary["windows"] > 1 else "")
            + f") in {summary['wall_s']:.1f} s; cache {summary['cache']}: "
            f"{d['full']} full / {d['partial']} partial / {d['reuse']} reuse forwards"
            + (f" ({per_expert})" if per_expert else "")
            + f", {summary['flops_ratio']:.0%} of uncached FLOPs; stats: {summary['stats']}"
            + (f"; plot: {summary['plot']}" if plot else ""),
            highlight=False,
        )


def run_preview(spec, paths, frame: int | None, quiet: bool, json_out: bool) -> None:
    """Prepare the edit, pick the window, load the model, run and report the preview."""
    from hetcache_cli.pipeline.edit import prepare_edit
    from hetcache_cli.pipeline.model import PipelinePool
    from hetcache_cli.report.preview import pick_window, run_preview as preview_window

    with _held_logs():  # a frame beyond the clip fails before the model loads, in one line
        prep = prepare_edit(spec, overwrite=True)
        window = pick_window(prep.windows, prep.mask.counts, frame)
    quiet_libraries()
    pipe, info = PipelinePool().get(spec.model, spec.device, spec.dtype, spec.offload)
    label = f"preview (window {window.index + 1}/{len(prep.windows)})"
    with StepProgress(label, spec.steps, quiet=quiet or json_out) as bar:
        summary = preview_window(prep, pipe, info, window, paths, progress=lambda d, t: bar.update(d, t, None))
    if json_out:
        print_json(summary)
    elif not quiet:
        written = ", ".join(p for p in (summary["sheet"], summary["video"], summary["stats"], summary["plot"]) if p)
        stdout.print(
            f"preview: window {window.index + 1} of {len(prep.windows)} (frames {window.start}-{window.stop - 1}) in "
            f"{summary['window_s']:.1f} s; the whole edit ({len(prep.windows)} window(s)) would take about "
            f"{_duration(summary['estimate_s'])}; wrote {written} (no output video)",
            highlight=False,
        )


@contextlib.contextmanager
def _held_logs():
    """Hold back what the block logs, and show it only when the block succeeds."""
    package = logging.getLogger("hetcache_cli")
    held: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = held.append
    package.addHandler(handler)
    package.propagate = False
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.propagate = True
    for record in held:
        logging.getLogger(record.name).handle(record)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
