import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

try:  # property tests draw the same examples on every run: a CI run fails only where the code changed
    from hypothesis import settings

    settings.register_profile("hetcache", derandomize=True)
    settings.load_profile("hetcache")
except ImportError:
    pass


@pytest.fixture(scope="session", autouse=True)
def _user_config_dir(tmp_path_factory):
    """Presets calibrated on this machine (~/.config/hetcache) must not change what the tests run."""
    old = os.environ.get("HETCACHE_CONFIG_DIR")
    os.environ["HETCACHE_CONFIG_DIR"] = str(tmp_path_factory.mktemp("user-config"))
    yield
    if old is None:
        os.environ.pop("HETCACHE_CONFIG_DIR", None)
    else:
        os.environ["HETCACHE_CONFIG_DIR"] = old


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory):
    """A 9-frame 64x64 clip (8 fps) with a moving ball, and a static mask over its path."""
    import cv2

    from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render
    from hetcache_cli.io.video import write_video

    root = tmp_path_factory.mktemp("clip")
    scene = SceneSpec(9, 64, 64, pan=(0.2, 0.5), shapes=[MovingShape("ball", "white", 8, (32, 24), (0.0, 1.5))])
    frames, cover = render(scene)
    video = root / "clip.mp4"
    write_video(video, frames, 8.0, lossless=True)
    mask = root / "mask.png"
    cv2.imwrite(str(mask), ((cover.max(axis=0) > 0.05) * 255).astype(np.uint8))
    return {"video": video, "mask": mask, "frames": frames, "root": root}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-block random tiny Wan-VACE pipeline saved in diffusers format."""
    from hetcache_cli.pipeline.tiny import TinyConfig, build_tiny_pipeline

    path = tmp_path_factory.mktemp("model") / "tiny"
    build_tiny_pipeline(TinyConfig(num_layers=2, vace_layers=[0]), seed=0).save_pretrained(path)
    return path


def pytest_collection_modifyitems(config, items):
    """The rehearsal and distributed lanes run only when asked for by name (`-m rehearsal`, `-m distributed`);
    everyday lanes leave them out."""
    asked = config.getoption("-m") or ""
    lanes = [lane for lane in ("rehearsal", "distributed") if lane not in asked]
    if not lanes:
        return
    kept = [item for item in items if not any(item.get_closest_marker(lane) for lane in lanes)]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
