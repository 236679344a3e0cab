"""Long clips: a procedural clip edited in windows, its seams and drift, and peak memory vs clip length.

    python scripts/bench_long_clip.py                          # 103 frames 96x96, the embedded model
    python scripts/bench_long_clip.py --frames 205 --size 160 --steps 20 --out runs/long
    python scripts/bench_long_clip.py --memory                 # also peak RSS of the clip and of one twice as long
    python scripts/bench_long_clip.py --memory --size 512 --max-area 16384 --steps 2 --prompts "a red ball"

Each edit runs `hetcache edit` in a child process (so that its peak RSS is its own), with the
model folder's window settings unless --window-frames/--window-overlap are given. The clip is a
textured background panning under a white ball that crosses the frame; the mask video follows
the ball. Printed: frames, windows, wall time, the worst window join's temporal error against the
median of like runs inside windows (`hetcache eval`'s seam report), the colour drift of the
masked region from the first window to the last (and the source's), the mean colour per window;
with --memory, the peak RSS of each length and the size of the decoded uint8 clip. JSON beside
the outputs (bench_long_clip.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from hetcache_cli.eval.seams import seam_report
from hetcache_cli.io.mask import load_mask
from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render
from hetcache_cli.io.video import read_video, write_video


def make_clip(root: Path, frames: int, size: int, fps: float = 8.0) -> tuple[Path, Path]:
    ball = MovingShape("ball", "white", size * 0.12, (size * 0.55, size * 0.2), (-0.1 * size / frames, 0.6 * size / frames))
    video_frames, cover = render(SceneSpec(frames, size, size, pan=(0.1, 0.3), shapes=[ball], texture_seed=3))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    masks = np.stack([cv2.dilate((c > 0.02).astype(np.uint8), kernel) * 255 for c in cover])
    root.mkdir(parents=True, exist_ok=True)
    video, mask = root / f"clip{frames}.mp4", root / f"mask{frames}.mp4"
    write_video(video, video_frames, fps, crf=12)
    write_video(mask, np.repeat(masks[..., None], 3, axis=-1), fps, lossless=True)
    return video, mask


def edit(video: Path, mask: Path, out: Path, args, prompt: str) -> dict:
    cmd = [sys.executable, "-m", "hetcache_cli", "edit", str(video), "--mask", str(mask), "--prompt", prompt,
           "-o", str(out), "--steps", str(args.steps), "--crf", "0", "--overwrite", "--quiet",
           "--preset", args.preset]  # fmt: skip
    if args.window_frames:
        cmd += ["--window-frames", str(args.window_frames)]
    if args.window_overlap is not None:
        cmd += ["--window-overlap", str(args.window_overlap)]
    if args.model:
        cmd += ["--model", args.model]
    if args.color_match:
        cmd += ["--window-color-match"]
    if args.max_area:
        cmd += ["--max-area", str(args.max_area)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    stats = json.loads(out.with_name(f"{out.stem}.stats.json").read_text())
    stats["seconds"] = time.perf_counter() - start
    return stats


def measure(video: Path, mask: Path, args, prompt: str) -> dict:
    out = video.with_name(f"{video.stem}_{prompt.split()[1]}{'_cm' if args.color_match else ''}.mp4")
    stats = edit(video, mask, out, args, prompt)
    pred, src = read_video(out).frames, read_video(video).frames
    region = load_mask(mask, src.shape[0], src.shape[1:3])
    seams = seam_report(pred, region, stats["windows"], src)
    return {
        "prompt": prompt,
        "frames": pred.shape[0],
        "windows": len(stats["windows"]),
        "window_frames": stats["settings"]["window_frames"],
        "window_overlap": stats["settings"]["window_overlap"],
        "seconds": round(stats["seconds"], 1),
        "wall_s": round(stats["summary"]["wall_s"], 1),
        "flops_ratio": round(stats["summary"]["flops_ratio"], 3),
        "peak_rss_mib": round(stats["summary"]["peak_memory_bytes"] / 2**20, 1),
        "clip_uint8_mib": round(src.nbytes / 2**20, 1),
        "seam_ratio": seams["ratio"],
        "seam_median_ratio": seams["median_ratio"],
        "worst_join": seams["join_max"],
        "within_median": seams["within_median"],
        "drift": seams["drift"]["pred"],
        "drift_source": seams["drift"]["ref"],
        "colour": seams["colour"]["pred"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=103)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--model", default=None, help="model folder [default: the embedded model]")
    parser.add_argument("--window-frames", type=int, default=None)
    parser.add_argument("--window-overlap", type=int, default=None)
    parser.add_argument("--prompts", default="a red ball,a blue ball")
    parser.add_argument("--color-match", action="store_true", help="edit with --window-color-match")
    parser.add_argument("--memory", action="store_true", help="also edit a clip twice as long and compare peak RSS")
    parser.add_argument("--max-area", type=int, default=None, help="the model's working area (a large --size stays cheap)")
    parser.add_argument("--out", type=Path, default=Path("runs/long_clip"))
    args = parser.parse_args()

    rows = []
    video, mask = make_clip(args.out, args.frames, args.size)
    for prompt in args.prompts.split(","):
        rows.append(measure(video, mask, args, prompt.strip()))
    if args.memory:
        video2, mask2 = make_clip(args.out, 2 * args.frames, args.size)
        rows.append(measure(video2, mask2, args, args.prompts.split(",")[0].strip()))
    print("| frames | size | windows (frames/overlap) | prompt | wall s | FLOPs | join / like runs inside: worst, median | "
          "drift (source) | peak RSS MiB | clip uint8 MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['frames']} | {args.size}x{args.size} | {r['windows']} ({r['window_frames']}/{r['window_overlap']}) | "
            f"{r['prompt']} | {r['wall_s']} | {r['flops_ratio']:.0%} | {r['seam_ratio']:.2f}x, {r['seam_median_ratio']:.2f}x | "
            f"{r['drift']:.1f} ({r['drift_source']:.1f}) "
            f"| {r['peak_rss_mib']} | {r['clip_uint8_mib']} |"
        )
    for r in rows:
        print(f"{r['prompt']} ({r['frames']} frames): mean RGB in the mask per window {r['colour']}")
    (args.out / "bench_long_clip.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
