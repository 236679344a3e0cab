"""A tiny random-weight SAM 2 video model saved like real weights, and a clip with a drawn object."""

from pathlib import Path

import numpy as np
import pytest
from sam2_helpers import save_tiny_sam2


@pytest.fixture(scope="session")
def tiny_sam2_dir(tmp_path_factory) -> Path:
    """The tiny model saved with save_pretrained, plus the processor config real checkpoints carry."""
    return save_tiny_sam2(tmp_path_factory.mktemp("sam2") / "tiny-sam2")


@pytest.fixture(scope="session")
def object_clip(tmp_path_factory):
    """A 12-frame 80x56 clip (10 fps) with a white square moving right over a textured background."""
    from hetcache_cli.io.video import write_video

    rng = np.random.default_rng(3)
    frames = np.empty((12, 56, 80, 3), np.uint8)
    for f in range(12):
        frames[f] = rng.integers(40, 90, (56, 80, 3))
        frames[f, 20:36, 10 + 3 * f : 26 + 3 * f] = 240
    path = tmp_path_factory.mktemp("object") / "clip.mp4"
    write_video(path, frames, 10.0, lossless=True)
    return {"video": path, "frames": frames}
