"""A regular (non-editable) wheel carries the embedded model, demo clip and presets."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_ships_the_data_resources_looks_for(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT), "-w", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    [wheel] = tmp_path.glob("hetcache-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "hetcache_cli/_data/"
    for rel in (
        "assets/model/model_index.json",
        "assets/model/hetcache_defaults.json",
        "assets/model/transformer/diffusion_pytorch_model.safetensors",
        "assets/model/vae/diffusion_pytorch_model.safetensors",
        "assets/demo/input.mp4",
        "assets/demo/mask.png",
        "configs/presets/fast.yaml",
    ):
        assert data + rel in names, rel
    assert not [n for n in names if "_edited" in n]  # quick-start outputs are not data
    assert "hetcache_cli/resources.py" in names
