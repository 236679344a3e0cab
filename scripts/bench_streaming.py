"""Long real-size clips through `hetcache edit`: peak RSS, `--dry-run` time and time per output frame vs length.

    python scripts/bench_streaming.py                                   # 1080p 10/30/60 s and 4K 30 s
    python scripts/bench_streaming.py --clips 1080p:10 1080p:60 --out runs/stream
    python scripts/bench_streaming.py --clips 1080p:10 1080p:60 4k:30 --dry-run-only

Each clip is made by ffmpeg (`testsrc2` at 30 fps, H.264, a 440 Hz sine in AAC), the mask is a 100-px
circle as a PNG. Every run is a child process (`python -m hetcache_cli edit`), so its peak RSS
(`wait4`'s ru_maxrss) is its own. The edit runs `--steps 1` on a small working size (--max-area), so
decoding, compositing, encoding and I/O dominate, not the model. Prints a table and writes
bench_streaming.json beside the clips. A benchmark, not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}


def make_clip(root: Path, name: str, seconds: int) -> tuple[Path, Path]:
    width, height = SIZES[name]
    video, mask = root / f"{name}_{seconds}s.mp4", root / f"{name}_mask.png"
    if not video.exists():
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
             f"testsrc2=size={width}x{height}:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
             "-c:a", "aac", str(video)],
            check=True,
        )  # fmt: skip
    if not mask.exists():
        image = np.zeros((height, width), np.uint8)
        cv2.circle(image, (width // 3, height // 2), 50, 255, -1)
        cv2.imwrite(str(mask), image)
    return video, mask


def run(cmd: list[str], threads: int | None = None) -> tuple[float, float, int, int, str]:
    """(wall seconds, CPU seconds, peak RSS bytes, exit code, stderr tail) of one child process. CPU seconds
    are user + system of the child and the processes it waited for (its ffmpeg decoder and encoders)."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}))
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage, not every child's so far
        wall = time.perf_counter() - start
        log.seek(0)
        tail = log.read().decode(errors="replace")[-400:]
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status), tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=["1080p:10", "1080p:30", "1080p:60", "4k:30"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_streaming"))
    parser.add_argument("--max-area", type=int, default=64 * 64)
    parser.add_argument("--window-frames", type=int, default=33)
    parser.add_argument("--window-overlap", type=int, default=8)
    parser.add_argument("--model", default=None)
    parser.add_argument("--dry-run-only", action="store_true", help="measure the plan only (no edit)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of each edit (OMP_NUM_THREADS); 1 makes CPU seconds per frame comparable "
                             "on a machine shared with other work")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in args.clips:
        name, seconds = item.split(":")
        video, mask = make_clip(args.out, name.lower(), int(seconds))
        out = args.out / f"{video.stem}_edit.mp4"
        cmd = [sys.executable, "-m", "hetcache_cli", "edit", str(video), "--mask", str(mask), "-p", "a red ball",
               "--steps", "1", "--max-area", str(args.max_area), "--crop-min-size", "128", "--window-frames",
               str(args.window_frames), "--window-overlap", str(args.window_overlap), "-o", str(out), "--overwrite",
               "--quiet", *(["--model", args.model] if args.model else [])]  # fmt: skip
        row = {"clip": video.name, "frames": 30 * int(seconds)}
        row["dry_run_s"], row["dry_run_cpu_s"], row["dry_run_rss"], code, err = run([*cmd, "--dry-run"], args.threads)
        if code:
            print(f"{video.name}: --dry-run failed: {err}", file=sys.stderr)
        measured = (0.0, 0.0, 0, 0, "") if args.dry_run_only else run(cmd, args.threads)
        row["edit_s"], row["edit_cpu_s"], row["edit_rss"], code, err = measured
        row["ok"] = code == 0
        if code:
            print(f"{video.name}: edit failed: {err}", file=sys.stderr)
        row["s_per_frame"] = row["edit_s"] / row["frames"]
        row["cpu_s_per_frame"] = row["edit_cpu_s"] / row["frames"]
        stats = out.with_suffix(".stats.json")
        if row["ok"] and stats.exists():
            row["stages"] = json.loads(stats.read_text())["summary"].get("stages")
        rows.append(row)
        print(
            f"{row['clip']:<16} {row['frames']:>5} frames  dry run {row['dry_run_s']:6.1f} s "
            f"{row['dry_run_rss'] / 2**30:5.2f} GiB  edit {row['edit_s']:7.1f} s "
            f"{row['s_per_frame'] * 1e3:6.1f} ms/frame ({row['cpu_s_per_frame'] * 1e3:6.1f} CPU ms/frame) "
            f"{row['edit_rss'] / 2**30:5.2f} GiB" + ("" if row["ok"] else "  FAILED"),
            flush=True,
        )
        (args.out / "bench_streaming.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
