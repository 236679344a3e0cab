"""Helpers of the rehearsal lane: the GPU user's runs rehearsed on the CPU, the same commands in
bfloat16 and float16, each checked against the float32 run of the same command (same schedule, close pixels).

A CUDA run gets `--dtype auto` = bfloat16, with diffusers' float32-kept modules (time embedder,
norms) and the VAE in float32: loading through `from_pretrained` with `dtype=` gives exactly that
layout here too. Lane: `python -m pytest -q -m rehearsal` (run by .ci/run after the full suite).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from hetcache_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo"
DEMO_EDIT = [DEMO / "input.mp4", "--mask", DEMO / "mask.png", "--prompt", "a red ball"]
HALF = ["bfloat16", "float16"]

sys.path.insert(0, str(ROOT / "tests" / "mask"))  # sam2_helpers, for the tracker rehearsal


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{' '.join(map(str, args))}\nexit {result.exit_code}: {result.stderr}"
    return result


def read_frames(path: Path) -> np.ndarray:
    """Every frame of a video as uint8 RGB [F, H, W, 3], straight from ffmpeg."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])


def read_mask_image(path: Path, shape_hw: tuple[int, int]) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    image = cv2.resize(image, (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_NEAREST)
    return image > 127


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB of two uint8 videos [F, H, W, 3] over a bool region [F, H, W] (or [H, W]); 100 = identical."""
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if region is not None:
        region = np.broadcast_to(region, diff.shape[:3])
        diff = diff[region]
    mse = float(diff.mean())
    return 100.0 if mse == 0 else min(100.0, 10 * np.log10(255.0**2 / mse))


def decisions(stats: dict) -> list[tuple]:
    """Every forward's decision, keyed by window, expert, step and branch."""
    return [(s.get("window"), s.get("expert"), s["step"], s["branch"], s["decision"]) for s in stats["steps"]]


@dataclass
class Edit:
    frames: np.ndarray  # [F, H, W, 3] uint8, decoded from the lossless output
    stats: dict


class Rehearsal:
    """`hetcache edit` runs by dtype; float32 runs are kept, so each is made once per command."""

    def __init__(self, root: Path):
        self.root = root
        self._done: dict[tuple, Edit] = {}

    def edit(self, dtype: str, *args) -> Edit:
        key = (dtype, *map(str, args))
        if key not in self._done:
            name = hashlib.sha1("\0".join(key).encode()).hexdigest()[:12]
            out = self.root / f"{name}.mp4"
            invoke("edit", *args, "--dtype", dtype, "--device", "cpu", "--crf", 0, "--quiet", "-o", out)
            stats = json.loads(out.with_suffix(".stats.json").read_text())
            self._done[key] = Edit(read_frames(out), stats)
        return self._done[key]

    def check(self, dtype: str, *args, region: np.ndarray, min_db: float) -> float:
        """Run in `dtype` and in float32; the same decisions, and PSNR over `region` >= min_db. Returns the PSNR."""
        half, full = self.edit(dtype, *args), self.edit("float32", *args)
        assert half.stats["model"]["dtype"] == dtype and full.stats["model"]["dtype"] == "float32"
        assert decisions(half.stats) == decisions(full.stats)
        assert half.frames.shape == full.frames.shape
        value = psnr(half.frames, full.frames, region)
        print(f"{dtype} {' '.join(map(str, args))}: {value:.1f} dB (floor {min_db})")
        assert value >= min_db, f"{dtype}: {value:.1f} dB from float32 < {min_db}"
        return value
