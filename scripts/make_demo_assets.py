"""Build the embedded demo: the tiny Wan-VACE model folder and the demo clip and mask.

    python scripts/make_demo_assets.py            # clip + mask, and the model if missing
    python scripts/make_demo_assets.py --model    # also (re)build the random-weight model

The trained demo model (scripts/train_demo_model.py) replaces assets/model when it exists.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render
from hetcache_cli.io.video import write_video

ROOT = Path(__file__).resolve().parents[1]
DEMO = dict(frames=17, height=160, width=160, fps=8.0)


def demo_scene() -> SceneSpec:
    ball = MovingShape("ball", "white", radius=18, start=(84, 60), velocity=(-0.6, 2.2))
    return SceneSpec(DEMO["frames"], DEMO["height"], DEMO["width"], pan=(0.3, 0.8), shapes=[ball], texture_seed=7)


def write_demo(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, cover = render(demo_scene())
    write_video(out_dir / "input.mp4", frames, DEMO["fps"], crf=12)
    region = (cover.max(axis=0) > 0.02).astype(np.uint8)  # the ball's whole path
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    cv2.imwrite(str(out_dir / "mask.png"), region * 255)
    print(f"wrote {out_dir / 'input.mp4'} and {out_dir / 'mask.png'} (mask covers {region.mean():.1%})")


def write_model(out_dir: Path, seed: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from hetcache_cli.pipeline.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=seed)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    print(f"wrote random-weight tiny model to {out_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="store_true", help="(re)build the random-weight model folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_demo(ROOT / "assets" / "demo")
    model_dir = ROOT / "assets" / "model"
    if args.model or not (model_dir / "model_index.json").exists():
        write_model(model_dir, args.seed)


if __name__ == "__main__":
    main()
