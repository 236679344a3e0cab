"""Presets calibrated for a model: read from its folder or the user config folder, validated, used by --preset."""

import json

import pytest

from hetcache_cli.cache.config import build_config
from hetcache_cli.errors import InputError
from hetcache_cli.spec.load import build_spec
from hetcache_cli.spec.model_defaults import model_key, model_presets, user_defaults_path

BASE = {"video": "a.mp4", "mask": "m.png", "prompt": "a red ball"}


def _folder(tmp_path, content):
    folder = tmp_path / "my-model"
    folder.mkdir(exist_ok=True)
    (folder / "hetcache_defaults.json").write_text(json.dumps(content))
    return str(folder)


def test_a_models_preset_replaces_the_shipped_one_and_spec_keys_still_win(tmp_path):
    model = _folder(tmp_path, {"guidance_scale": 2.0, "presets": {"fast": {"reuse_threshold": 0.1, "warmup_steps": 3}}})
    spec = build_spec({**BASE, "model": model, "cache": {"preset": "fast"}})
    config = spec.cache_config()
    shipped = build_config(preset="fast")
    assert (config.reuse_threshold, config.warmup_steps, config.preset) == (0.1, 3, "fast")
    assert config.full_threshold == build_config().full_threshold != shipped.full_threshold  # not merged with shipped
    spec = build_spec({**BASE, "model": model, "cache": {"preset": "fast", "warmup_steps": 1}})
    assert spec.cache_config().warmup_steps == 1
    other = build_spec({**BASE, "model": model, "cache": {"preset": "quality"}}).cache_config()
    assert other.full_threshold == build_config(preset="quality").full_threshold  # not calibrated: shipped
    assert spec.guidance_scale == 2.0


def test_the_user_config_folder_wins_over_the_model_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HETCACHE_CONFIG_DIR", str(tmp_path / "config"))
    model = _folder(tmp_path, {"presets": {"fast": {"reuse_threshold": 0.1}, "quality": {"reuse_threshold": 0.01}}})
    user = user_defaults_path(model)
    assert user.parent.name == model_key(model) and "/" not in model_key(model)
    user.parent.mkdir(parents=True)
    user.write_text(json.dumps({"presets": {"fast": {"reuse_threshold": 0.09}}}))
    assert model_presets(model) == {"fast": {"reuse_threshold": 0.09}, "quality": {"reuse_threshold": 0.01}}
    hub = user_defaults_path("Wan-AI/Wan2.1-VACE-1.3B-diffusers")
    assert hub.parent.name == "Wan-AI--Wan2.1-VACE-1.3B-diffusers"


@pytest.mark.parametrize("content, fragment", [
    ({"presets": {"turbo": {}}}, "unknown preset 'turbo'"),
    ({"presets": {"fast": {"schedule": "FPF"}}}, "not allowed keys ['schedule']"),
    ({"presets": {"fast": {"reuse_threshold": "high"}}}, "reuse_threshold must be float"),
    ({"presets": {"fast": {"reuse_threshold": 0.5, "full_threshold": 0.1}}}, "below reuse_threshold"),
    ({"presets": [1]}, "presets must be an object"),
    ({"calibration": "yesterday"}, "calibration must be an object"),
])  # fmt: skip
def test_bad_presets_are_input_errors_naming_the_file_and_key(tmp_path, content, fragment):
    model = _folder(tmp_path, content)
    with pytest.raises(InputError, match="hetcache_defaults.json") as info:
        build_spec({**BASE, "model": model})
    assert fragment in str(info.value)
