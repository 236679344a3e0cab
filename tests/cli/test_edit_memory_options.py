"""The demo edit with `--offload group` and `cache_dtype: float8_e4m3fn` on a CPU (issue 16's acceptance)."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.io.video import read_video
from hetcache_cli.resources import demo_dir

runner = CliRunner()
STEPS = 12


def edit(out, *extra):
    args = ["edit", demo_dir() / "input.mp4", "--mask", demo_dir() / "mask.png", "--prompt", "a red ball",
            "--preset", "fast", "--steps", STEPS, "--crf", 0, "-o", out, "--quiet", *extra]
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "plain.mp4"
    r = edit(out)
    assert r.exit_code == 0, r.stderr
    return out, json.loads(out.with_name("plain.stats.json").read_text())


@pytest.mark.slow
def test_group_offload_edit_matches_the_plain_one(plain, tmp_path):
    out = tmp_path / "group.mp4"
    r = edit(out, "--offload", "group")
    assert r.exit_code == 0, r.stderr
    stats = json.loads((tmp_path / "group.stats.json").read_text())
    assert stats["settings"]["offload"] == "group" and stats["model"]["offload"] == "group"
    assert np.array_equal(read_video(out).frames, read_video(plain[0]).frames)


@pytest.mark.slow
def test_fp8_cache_edit_uses_at_most_a_third_of_the_float32_cache_memory(plain, tmp_path):
    spec = tmp_path / "fp8.yaml"
    spec.write_text(yaml.safe_dump({"cache": {"cache_dtype": "float8_e4m3fn"}}))
    out = tmp_path / "fp8.mp4"
    r = edit(out, "--spec", spec)
    assert r.exit_code == 0, r.stderr
    fp8 = json.loads((tmp_path / "fp8.stats.json").read_text())["summary"]
    float32 = plain[1]["summary"]
    assert plain[1]["model"]["dtype"] == "float32"
    assert fp8["cache_memory_measured_bytes"] == fp8["cache_memory_bytes"]
    assert 0 < fp8["cache_memory_bytes"] <= float32["cache_memory_bytes"] / 3
    assert fp8["schedule"] == float32["schedule"]


@pytest.mark.parametrize("flags, message", [
    (["--guidance-scale-2", "3"], "guidance_scale_2 is set but model embedded has one transformer"),
    (["--offload", "disk"], "offload 'disk' is not valid; use one of none, model, group, leaf"),
])
def test_bad_memory_options_are_input_errors(tmp_path, flags, message):
    out = tmp_path / "bad.mp4"
    r = edit(out, *flags)
    assert r.exit_code == 2 and message in r.stderr
    assert not out.exists()
