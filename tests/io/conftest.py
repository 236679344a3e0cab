"""Tiny synthetic clips and masks for the io tests."""

from pathlib import Path

import cv2
import numpy as np
import pytest


def _clip(num_frames: int = 9, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 [F, H, W, 3]: gradients moving over time plus a noisy corner."""
    yy, xx = np.mgrid[0:height, 0:width]
    planes = [[(xx * 4 + t * 7) % 256, (yy * 5 + t * 3) % 256, ((xx + yy) * 2 + t) % 256] for t in range(num_frames)]
    frames = np.stack([np.stack(p, -1) for p in planes]).astype(np.uint8)
    frames[:, :8, :8] = np.random.default_rng(seed).integers(0, 256, (num_frames, 8, 8, 3))
    return frames


@pytest.fixture
def make_clip():
    return _clip


@pytest.fixture
def write_png():
    def write(path: Path, img: np.ndarray) -> Path:
        # cv2 stores BGR(A); the masks written here are gray or have equal channels except alpha.
        assert cv2.imwrite(str(path), img)
        return path

    return write


def list_dir(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def ls():
    return list_dir
