"""Cache settings that do not fit the model: exit 2, one line naming the fix, before any weights load."""

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

import hetcache_cli.pipeline.model as model_module
from hetcache_cli.cli.app import app
from hetcache_cli.resources import embedded_model_dir

runner = CliRunner()


@pytest.fixture
def loads(monkeypatch):
    """Every weight load the command attempts (none may happen: the load is replaced by a failure)."""
    calls = []

    def load_pipeline(ref, *args, **kwargs):
        calls.append(ref)
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(model_module, "load_pipeline", load_pipeline)
    return calls


def edit(small_clip, tmp_path, *extra):
    args = ["edit", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
            "-o", tmp_path / "o.mp4", "--steps", 2, *extra]
    return runner.invoke(app, [str(a) for a in args])


def assert_input_error(r, fragment, loads):
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], r.stderr
    assert "Traceback" not in r.stderr and loads == []


def spec_file(tmp_path, cache: dict):
    path = tmp_path / "edit.yaml"
    path.write_text(yaml.safe_dump({"cache": cache}))
    return path


def test_score_layer_beyond_the_model_fails_before_the_load(small_clip, tmp_path, loads):
    # the embedded model has 4 blocks
    r = edit(small_clip, tmp_path, "--spec", spec_file(tmp_path, {"score_layer": 99}))
    assert_input_error(r, "score_layer 99 is out of range", loads)
    assert "use -1 (the middle block) or 0..3" in r.stderr
    ok = edit(small_clip, tmp_path, "--spec", spec_file(tmp_path, {"score_layer": 3}), "--dry-run")
    assert ok.exit_code != 0 and len(loads) == 1  # a valid layer gets as far as the (replaced) load


def test_bad_cache_dtype_fails_before_the_load(small_clip, tmp_path, loads):
    r = edit(small_clip, tmp_path, "--spec", spec_file(tmp_path, {"cache_dtype": "int8"}))
    assert_input_error(r, "cache_dtype 'int8' is not valid", loads)


def test_rescale_that_is_not_numbers_fails_before_the_load(small_clip, tmp_path, loads):
    r = edit(small_clip, tmp_path, "--spec", spec_file(tmp_path, {"rescale": ["a", 1]}))
    assert_input_error(r, "rescale", loads)


def test_schedule_of_another_length_fails_before_the_load(small_clip, tmp_path, loads):
    r = edit(small_clip, tmp_path, "--schedule", "FPRF")
    assert_input_error(r, "has 4 letters but the edit has 2 steps", loads)


@pytest.fixture
def mismatched_model(tmp_path):
    """The embedded model with a transformer config.json that claims more heads than its weights hold."""
    folder = tmp_path / "model"
    shutil.copytree(embedded_model_dir(), folder)
    config_path = folder / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["num_attention_heads"] += 2
    config_path.write_text(json.dumps(config))
    return folder


def test_head_count_that_does_not_match_the_weights_fails_before_the_load(small_clip, tmp_path, mismatched_model, loads):
    r = edit(small_clip, tmp_path, "--model", mismatched_model)
    assert_input_error(r, "8 heads x 16 = 128 but its weights are 96 wide", loads)
