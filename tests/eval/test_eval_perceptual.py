"""LPIPS is skipped, with the reason, unless the package and both weight files are local."""

import importlib
import sys

import numpy as np
from rich.console import Console

from hetcache_cli.cli.eval import results_table
from hetcache_cli.eval import perceptual
from hetcache_cli.eval.metrics import compare_videos

FRAMES = np.random.default_rng(0).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)


def fake_lpips(root, with_weights):
    """An importable-looking `lpips` that fails loudly if it is ever imported."""
    pkg = root / "lpips"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('lpips must not be imported')\n")
    if with_weights:
        (pkg / "weights" / "v0.1").mkdir(parents=True)
        (pkg / "weights" / "v0.1" / "alex.pth").write_bytes(b"w")
    importlib.invalidate_caches()
    return pkg


def test_not_installed(monkeypatch):
    monkeypatch.setattr(perceptual, "_find_spec", lambda name: None)
    available, reason = perceptual.lpips_status()
    assert not available and "not installed" in reason
    result = compare_videos(FRAMES, FRAMES)
    assert result["lpips"] is None
    assert result["skipped"]["lpips"] == reason


def test_package_without_weights_is_not_imported(tmp_path, monkeypatch):
    pkg = fake_lpips(tmp_path / "site", with_weights=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    available, reason = perceptual.lpips_status()
    assert not available
    assert str(pkg / "weights" / "v0.1" / "alex.pth") in reason
    assert "lpips" not in sys.modules
    assert compare_videos(FRAMES, FRAMES)["skipped"]["lpips"] == reason


def test_backbone_weights_must_be_cached(tmp_path, monkeypatch):
    fake_lpips(tmp_path / "site", with_weights=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    real = perceptual._find_spec
    monkeypatch.setattr(perceptual, "_find_spec", lambda name: object() if name == "torchvision" else real(name))
    hub = tmp_path / "hub" / "checkpoints"
    monkeypatch.setattr(perceptual, "_hub_checkpoints", lambda: hub)
    available, reason = perceptual.lpips_status()
    assert not available
    assert "alexnet" in reason and "never downloads" in reason

    hub.mkdir(parents=True)
    (hub / perceptual._ALEXNET_FILE).write_bytes(b"w")
    assert perceptual.lpips_status() == (True, "")
    assert "lpips" not in sys.modules


def test_lpips_values_reach_result_and_table(monkeypatch):
    monkeypatch.setattr(perceptual, "_find_spec", lambda name: None)

    def lpips_fn(pred, ref, regions):
        return {name: 0.125 for name in regions}

    result = compare_videos(FRAMES, FRAMES, lpips_fn=lpips_fn)
    assert result["lpips"] == {"all": 0.125} and "lpips" not in result["skipped"]
    console = Console(record=True, width=120)
    console.print(results_table(result))
    text = console.export_text()
    assert "LPIPS" in text and "0.1250" in text
    console.print(results_table(compare_videos(FRAMES, FRAMES)))
    assert "LPIPS" not in console.export_text()
