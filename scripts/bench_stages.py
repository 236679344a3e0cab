"""Where an edit's time goes, and what the VAE passes cost before and after they were cut.

    python scripts/bench_stages.py                         # the demo edit: VAE before/after, presets end to end
    python scripts/bench_stages.py --clip 720p --repeat 3  # a windowed 720p clip with a small mask
    python scripts/bench_stages.py --skip-vae              # only the presets' end-to-end table

Part 1 (`--skip-vae` leaves it out), in one process on the demo edit's first window: diffusers' own VAE
passes (two encodes one after the other, the whole crop decoded) against the edit's (one batched encode;
on the CPU the convolutions tiled and the encoder channels-last; the decode of the region paste-back
uses), median of `--repeat` timings each, and how far the composited output moves (max difference in
0-255 levels inside the paste footprint).

Part 2: `hetcache edit` with `--cache none` and the presets quality / balanced / fast, each a child
process, `--repeat` rounds alternating the methods; from each run's statistics the stage split and
the edit's own time (`summary.stages.edit`: the first frame read to the file written; start-up and
model loading apart). Prints Markdown tables; JSON in OUT/bench_stages.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = (("none", ["--cache", "none"]), ("quality", ["--preset", "quality"]), ("balanced", ["--preset", "balanced"]),
           ("fast", ["--preset", "fast"]))  # fmt: skip
STAGE_KEYS = ("read", "text_encode", "vae_encode", "denoise", "transformer", "vae_decode", "composite", "write",
              "join", "edit")  # fmt: skip


def demo_inputs() -> tuple[Path, Path, list[str]]:
    from hetcache_cli.resources import demo_dir

    return demo_dir() / "input.mp4", demo_dir() / "mask.png", []


def clip_720p(root: Path, seconds: float = 4.0) -> tuple[Path, Path, list[str]]:
    """A 720p clip (ffmpeg testsrc2, 24 fps) with a 60-px disc mask: several windows of a small crop."""
    import cv2
    import imageio_ffmpeg

    video, mask = root / "clip720.mp4", root / "mask720.png"
    if not video.exists():
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                        "testsrc2=size=1280x720:rate=24", "-t", str(seconds), "-c:v", "libx264", "-crf", "18",
                        "-pix_fmt", "yuv420p", str(video)], check=True)  # fmt: skip
    image = np.zeros((720, 1280), np.uint8)
    cv2.circle(image, (500, 360), 30, 255, -1)
    cv2.imwrite(str(mask), image)
    return video, mask, ["--window-frames", "33", "--window-overlap", "8", "--max-area", str(256 * 256),
                         "--crop-min-size", "384"]  # fmt: skip


def vae_passes(repeat: int) -> dict:
    """Part 1: the demo's first window through diffusers' VAE passes and through the edit's."""
    import torch

    from hetcache_cli.pipeline.model import load_pipeline, resolve_model
    from hetcache_cli.pipeline.vae import (
        batched_encode, cpu_convolutions, decode_box, decode_latents, plain_convolutions, restore_encode,
    )  # fmt: skip
    from hetcache_cli.pipeline.window_run import decode_plan, model_inputs
    from hetcache_cli.spec.load import build_spec

    video_path, mask_path, _ = demo_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        spec = build_spec({"video": str(video_path), "mask": str(mask_path), "prompt": "a red ball",
                           "output": str(Path(tmp) / "o.mp4")})  # fmt: skip
        from hetcache_cli.pipeline.edit import prepare_edit

        prep = prepare_edit(spec)
    pipe = load_pipeline(resolve_model(None), torch.device("cpu"), torch.float32)
    window, crop = prep.windows[0], prep.crops[0]
    from hetcache_cli.io.video import read_video

    src = read_video(video_path).frames[window.start : window.stop]
    video, mask = model_inputs(prep, window, crop, None, src)
    v = torch.from_numpy(video).permute(3, 0, 1, 2)[None] * 2 - 1  # [1, 3, F, H, W] in [-1, 1]
    m = torch.from_numpy(np.repeat(mask[None, None], 3, axis=1).astype(np.float32))
    device = torch.device("cpu")

    def timed(fn):
        fn()
        runs = []
        for _ in range(repeat):
            begin = time.perf_counter()
            out = fn()
            runs.append(time.perf_counter() - begin)
        return statistics.median(runs), out

    with torch.no_grad():
        enc_before, latents = timed(lambda: pipe.prepare_video_latents(v, m, [[]], None, device))
        batched_encode(pipe)
        cpu_convolutions(pipe.vae)
        enc_after, latents_after = timed(lambda: pipe.prepare_video_latents(v, m, [[]], None, device))
        restore_encode(pipe)
        plain_convolutions(pipe.vae)
        z = torch.randn(1, pipe.vae.config.z_dim, *latents.shape[2:], generator=torch.Generator().manual_seed(0))
        whole = decode_box(None, tuple(z.shape[-2:]))
        dec_before, full = timed(lambda: decode_latents(pipe, z, whole, video))
        box = decode_plan(prep, window, crop, pipe.vae_scale_factor_spatial)
        cpu_convolutions(pipe.vae)
        dec_after, part = timed(lambda: decode_latents(pipe, z, box, video))
        plain_convolutions(pipe.vae)
    from hetcache_cli.io.paste import paste_region

    foot = paste_region(mask[: window.frames], prep.spec.paste_dilation, prep.spec.paste_feather)
    diff = np.abs(full[: window.frames] - part[: window.frames])[foot] * 255
    return {
        "encode_s": [enc_before, enc_after], "decode_s": [dec_before, dec_after],
        "vae_s": [enc_before + dec_before, enc_after + dec_after],
        "latent_max_diff": float((latents - latents_after).abs().max()),
        "decode_fraction": box.fraction, "footprint_max_levels": float(diff.max()) if diff.size else 0.0,
        "footprint_mean_levels": float(diff.mean()) if diff.size else 0.0,
    }  # fmt: skip


def edits(video: Path, mask: Path, extra: list[str], out: Path, repeat: int) -> dict:
    """Part 2: each method's stage split (median over rounds) and edit time."""
    runs: dict[str, list[dict]] = {name: [] for name, _ in METHODS}
    for round_ in range(repeat):
        for name, flags in METHODS:
            target = out / f"{name}.mp4"
            cmd = [sys.executable, "-m", "hetcache_cli", "edit", str(video), "--mask", str(mask), "-p", "a red ball",
                   *flags, *extra, "-o", str(target), "--overwrite", "--quiet"]  # fmt: skip
            subprocess.run(cmd, check=True)
            summary = json.loads(target.with_suffix(".stats.json").read_text())["summary"]
            runs[name].append({**summary["stages"], "flops_ratio": summary["flops_ratio"]})
            print(f"round {round_ + 1} {name}: edit {summary['stages']['edit']:.2f} s", file=sys.stderr, flush=True)
    table = {}
    for name, rows in runs.items():
        table[name] = {k: statistics.median(r[k] for r in rows) for k in (*STAGE_KEYS, "flops_ratio")}
    base = table["none"]
    for name, row in table.items():
        row["edit_speedup"] = base["edit"] / row["edit"]
        row["dit_speedup"] = base["transformer"] / row["transformer"] if row["transformer"] > 0 else None
        row["flops_cut"] = 1.0 / row["flops_ratio"]
    return {"median": table, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", choices=("demo", "720p"), default="demo")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-vae", action="store_true", help="leave out part 1 (the VAE passes before/after)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_stages"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"clip": args.clip, "repeat": args.repeat}
    if not args.skip_vae:
        vae = report["vae"] = vae_passes(args.repeat)
        print("| VAE pass (demo window) | diffusers | hetcache | ratio |\n|---|---|---|---|")
        for key, label in (("encode_s", "encode (inactive + reactive)"), ("decode_s", "decode"), ("vae_s", "both")):
            before, after = vae[key]
            print(f"| {label} | {before:.2f} s | {after:.2f} s | {before / after:.2f}x |")
        print(f"\nlatents max diff {vae['latent_max_diff']:.1e}; decode box {vae['decode_fraction']:.0%} of the crop; "
              f"inside the paste footprint max {vae['footprint_max_levels']:.2f} / mean "
              f"{vae['footprint_mean_levels']:.3f} levels of 255\n")  # fmt: skip
    video, mask, extra = demo_inputs() if args.clip == "demo" else clip_720p(args.out)
    result = report["edits"] = edits(video, mask, extra, args.out, args.repeat)
    cols = ("text_encode", "vae_encode", "denoise", "transformer", "vae_decode", "composite", "read", "write", "join")
    print("| method | edit s | edit speedup | DiT speedup | FLOPs cut | " + " | ".join(cols) + " |")
    print("|---|---|---|---|---|" + "---|" * len(cols))
    for name, row in result["median"].items():
        dit = f"{row['dit_speedup']:.2f}x" if row["dit_speedup"] else "-"
        print(f"| {name} | {row['edit']:.2f} | {row['edit_speedup']:.2f}x | {dit} | {row['flops_cut']:.2f}x | "
              + " | ".join(f"{row[c]:.2f}" for c in cols) + " |")  # fmt: skip
    (args.out / "bench_stages.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
