import json

import pytest
import yaml

from hetcache_cli.cache.config import HetCacheConfig, build_config, parse_bytes
from hetcache_cli.errors import InputError
from hetcache_cli.spec.load import build_spec, load_spec_file, merge_values, model_defaults
from hetcache_cli.spec.schema import MODEL_DEFAULT_KEYS, EditSpec, edit_defaults
from hetcache_cli.spec.template import render_template


def write(tmp_path, data, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_single_edit_paths_resolve_against_spec_folder(tmp_path):
    sub = tmp_path / "specs"
    sub.mkdir()
    path = write(sub, {"video": "clips/a.mp4", "mask": "/abs/m.png", "prompt": "a red ball", "steps": 4})
    [values] = load_spec_file(path)
    assert values["video"] == str(sub.resolve() / "clips/a.mp4")
    assert values["mask"] == "/abs/m.png"
    spec = build_spec(values)
    expected = model_defaults(None).get("guidance_scale", edit_defaults()["guidance_scale"])
    assert spec.steps == 4 and spec.guidance_scale == expected


def test_batch_file_with_defaults(tmp_path):
    path = write(
        tmp_path,
        {
            "defaults": {"mask": "m.png", "steps": 3, "cache": {"method": "none"}},
            "edits": [
                {"video": "a.mp4", "prompt": "a red ball"},
                {"video": "b.mp4", "prompt": "a blue square", "steps": 5, "cache": {"preset": "fast"}},
            ],
        },
    )
    edits = load_spec_file(path)
    assert [e["steps"] for e in edits] == [3, 5]
    assert edits[1]["cache"] == {"method": "none", "preset": "fast"}
    assert edits[0]["mask"] == str(tmp_path.resolve() / "m.png")


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"video": "a.mp4", "mask": "m.png", "prompt": "x", "stepz": 3}, "unknown key 'stepz'"),
        ({"video": "a.mp4", "mask": "m.png", "prompt": "x", "steps": "ten"}, "steps must be int"),
        ({"video": "a.mp4", "mask": "m.png", "prompt": "x", "steps": True}, "steps must be int"),
        ({"video": "a.mp4", "mask": "m.png", "prompt": "x", "paste_back": "yes"}, "paste_back must be bool"),
        ({"video": "a.mp4", "mask": "m.png", "prompt": "x", "cache": {"methd": "none"}}, "unknown cache key 'methd'"),
        ({"video": "a.mp4", "mask": "m.png", "prompt": "x", "cache": {"margin_ratio": "half"}}, "cache.margin_ratio"),
        ({"edits": [], "mask": "m.png"}, "unknown top-level keys"),
        ({"edits": []}, "non-empty list"),
        ({"edits": ["a.mp4"]}, "expected a mapping"),
    ],
)
def test_spec_file_errors_name_the_key(tmp_path, data, fragment):
    path = write(tmp_path, data)
    with pytest.raises(InputError) as err:
        load_spec_file(path)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_lists_valid_keys(tmp_path):
    path = write(tmp_path, {"video": "a.mp4", "colour": "red"})
    with pytest.raises(InputError, match="valid keys: video, prompt, mask, box, negative_prompt"):
        load_spec_file(path)


@pytest.mark.parametrize(
    "text, fragment",
    [("video: [unclosed", "not valid YAML"), ("", "spec is empty"), ("- a\n- b\n", "expected a mapping")],
)
def test_malformed_files(tmp_path, text, fragment):
    with pytest.raises(InputError, match=fragment):
        load_spec_file(write(tmp_path, text))


def test_missing_spec_file(tmp_path):
    with pytest.raises(InputError, match="spec file not found"):
        load_spec_file(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"prompt": None, "video": "a.mp4"}, "missing prompt"),
        ({"steps": 0}, "steps is 0"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"mask_threshold": 1.5}, "mask_threshold"),
        ({"device": "tpu"}, "device 'tpu'"),
        ({"dtype": "int8"}, "dtype 'int8'"),
        ({"frames": -3}, "frames is -3"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"cache": {"preset": "ludicrous"}}, "preset 'ludicrous'"),
        ({"cache": {"method": "magic"}}, "method 'magic'"),
        ({"cache": {"schedule": "FFXQ"}}, "invalid letters"),
        ({"cache": {"reuse_threshold": 0.5, "full_threshold": 0.1}}, "full_threshold"),
        ({"cache": {"max_cache_memory": "lots"}}, "not a size"),
        ({"mask": None}, "missing mask; give --mask FILE or --box"),
        ({"box": "1,2,30,40"}, "both mask and box are given"),
        ({"mask": None, "box": "1,2,30"}, "box '1,2,30' has 3 number"),
        ({"mask": None, "box": ["1,2,30,40@0", [1, 2, 3, 4]]}, "each box is a string"),
        ({"mask": None, "box": 12}, "box must be list or str"),
    ],
)
def test_build_spec_validation(override, fragment):
    values = {"video": "a.mp4", "mask": "m.png", "prompt": "a red ball"}
    values.update(override)
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(InputError, match=fragment):
        build_spec(values)


def test_cli_overrides_spec_and_merges_cache():
    base = {"video": "a.mp4", "steps": 10, "cache": {"method": "teacache", "reuse_threshold": 0.1}}
    merged = merge_values(base, {"steps": 3, "seed": None, "cache": {"method": "hetcache"}})
    assert merged["steps"] == 3 and "seed" not in merged
    assert merged["cache"] == {"method": "hetcache", "reuse_threshold": 0.1}


def test_a_mask_or_box_replaces_both_below():
    spec_mask = {"video": "a.mp4", "mask": "m.png", "prompt": "p"}
    merged = merge_values(spec_mask, {"box": ["1,2,30,40@0", "5,2,34,40@8"], "mask": None})
    assert "mask" not in merged and merged["box"] == ["1,2,30,40@0", "5,2,34,40@8"]
    assert build_spec(merged).box == merged["box"] and build_spec(merged).mask is None
    back = merge_values({**spec_mask, "mask": None, "box": "1,2,30,40"}, {"mask": "other.png"})
    assert back["mask"] == "other.png" and "box" not in back
    both = merge_values(spec_mask, {"mask": "n.png", "box": "1,2,30,40"})
    with pytest.raises(InputError, match="both mask and box"):
        build_spec(both)


def test_preset_then_overrides():
    fast = build_config(preset="fast")
    assert fast.preset == "fast"
    explicit = build_config({"context_ratio": 0.33}, preset="fast")
    assert explicit.context_ratio == 0.33
    defaults = HetCacheConfig()
    assert build_config({}).context_ratio == defaults.context_ratio


def test_parse_bytes():
    assert parse_bytes("8GiB") == 8 * 2**30
    assert parse_bytes("1.5 MB") == 1_500_000
    assert parse_bytes(123) == 123


def test_template_is_valid_spec_with_every_key(tmp_path):
    text = render_template()
    data = yaml.safe_load(text)
    # the keys a model folder may recommend are there, commented out, so that they do not override it
    assert set(data) == {f for f in EditSpec.__dataclass_fields__} - set(MODEL_DEFAULT_KEYS)
    for key in MODEL_DEFAULT_KEYS:
        assert f"# {key}: " in text
    assert set(data["cache"]) == set(HetCacheConfig.__dataclass_fields__)
    [values] = load_spec_file(write(tmp_path, text))
    spec = build_spec(values)
    assert spec.steps == edit_defaults()["steps"]


def _model_folder(tmp_path, defaults):
    folder = tmp_path / "my-model"
    folder.mkdir()
    if defaults is not None:
        (folder / "hetcache_defaults.json").write_text(defaults if isinstance(defaults, str) else json.dumps(defaults))
    return str(folder)


def test_model_folder_defaults_rank_below_flags_and_specs(tmp_path):
    base = {"video": "a.mp4", "mask": "m.png", "prompt": "a red ball"}
    model = _model_folder(tmp_path, {"guidance_scale": 1.5, "steps": 12})
    spec = build_spec({**base, "model": model})
    assert (spec.guidance_scale, spec.steps, spec.seed) == (1.5, 12, edit_defaults()["seed"])
    spec = build_spec({**base, "model": model, "guidance_scale": 7.0})
    assert (spec.guidance_scale, spec.steps) == (7.0, 12)
    (tmp_path / "plain").mkdir()
    plain = build_spec({**base, "model": _model_folder(tmp_path / "plain", None)})
    assert plain.guidance_scale == edit_defaults()["guidance_scale"] == 5.0
    assert model_defaults("Wan-AI/Wan2.1-VACE-1.3B-diffusers") == {}


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object"),
        ({"seed": 3}, "may set only steps, guidance_scale, guidance_scale_2, negative_prompt"),
        ({"guidance_scale": "high"}, "guidance_scale must be float"),
    ],
)
def test_bad_model_defaults_file_is_an_input_error(tmp_path, content, fragment):
    model = _model_folder(tmp_path, content)
    with pytest.raises(InputError, match=fragment):
        build_spec({"video": "a.mp4", "mask": "m.png", "prompt": "p", "model": model})
