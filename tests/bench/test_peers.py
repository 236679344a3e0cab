"""Peer caches in the bench: each attaches, runs, detaches and leaves the pipeline as it found it."""

import dataclasses

import numpy as np
import pytest
import torch

from hetcache_cli.bench import peers
from hetcache_cli.bench.core import run_bench
from hetcache_cli.bench.methods import Method, parse_methods
from hetcache_cli.bench.peer_state import PipelineSnapshot, hooks_left
from hetcache_cli.bench.peers import PEERS, installed
from hetcache_cli.errors import InputError

CACHE_DIT = installed("cache_dit")


@pytest.fixture(scope="module")
def setup(small_clip, tiny_model_dir, tmp_path_factory):
    from hetcache_cli.pipeline.edit import prepare_edit, run_edit
    from hetcache_cli.pipeline.model import PipelinePool
    from hetcache_cli.spec.load import build_spec

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("peers")
    spec = build_spec({
        "video": str(small_clip["video"]), "mask": str(small_clip["mask"]), "prompt": "a red ball",
        "model": str(tiny_model_dir), "steps": 6, "frames": 5, "guidance_scale": 3.0, "output": str(out / "ref.mp4"),
        "cache": {"method": "none"},
    })  # fmt: skip
    prep = prepare_edit(spec, overwrite=True)
    pipe, info = PipelinePool().get(spec.model, "cpu", "float32")
    reference = run_edit(prep, pipe, info).raw
    fast = run_bench(prep, pipe, info, parse_methods("hetcache:fast"), 0, out / "fast", warmup=False)
    return dict(prep=prep, pipe=pipe, info=info, reference=reference, out=out, fast=fast["methods"][1],
                run_edit=run_edit)  # fmt: skip


@pytest.mark.slow
def test_each_peer_attaches_runs_detaches_and_the_next_method_runs_clean(setup, monkeypatch):
    from hetcache_cli.bench.runs import Runner

    pipe, prep = setup["pipe"], setup["prep"]
    after_each = []
    run = Runner.run

    def checked(self, res, counted, label=None, keep=True):
        before = PipelineSnapshot(pipe)
        run(self, res, counted, label, keep)
        after_each.append((res.label, before.leftovers(), hooks_left(pipe)))

    monkeypatch.setattr(Runner, "run", checked)
    methods = [Method("none")] + [Method(f) for f in PEERS] + [Method("hetcache", "fast")]
    report = run_bench(prep, pipe, setup["info"], methods, 0, setup["out"] / "all", warmup=False)
    assert [label for label, _, _ in after_each] == [m.label for m in methods]
    assert all(left == [] and hooks == [] for _, left, hooks in after_each), after_each
    rows = {row["method"]: row for row in report["methods"]}
    # the method after the last peer runs exactly as on the pipeline as loaded, and so does the uncached run
    after = rows["hetcache:fast"]
    assert after["flops"] == setup["fast"]["flops"] and after["quality"] == setup["fast"]["quality"]
    again = setup["run_edit"](dataclasses.replace(prep), pipe, setup["info"]).raw
    assert np.array_equal(again, setup["reference"])

    for family in PEERS:
        row = rows[family]
        if family.startswith("cache-dit") and not CACHE_DIT:
            assert row["status"] == "not installed" and "pip install -e '.[peers]'" in row["note"]
            continue
        if family == "diffusers:seacache":  # WanVACEPipeline gives no step index: SeaCache runs fail-open
            assert row["status"] == "no effect" and "fail-open" in row["note"], row
        elif family == "diffusers:fastercache":
            assert row["status"] == "failed", row
        else:
            assert row["status"] in ("ok", "broken", "no effect"), row
            assert row["flops"] > 0 and row["quality"]["psnr"]["inside"] is not None
        if row["status"] in ("ok", "broken"):
            assert row["flops_cut"] > 1.001 and row["quality"]["psnr"]["all"] < 100.0  # it skipped, output moved
        if family.startswith("cache-dit"):
            assert "left behind after detach (restored)" in row["note"]  # its patched forwards, put back by us
    assert "mag_ratios calibrated" in rows["diffusers:magcache"]["note"]


@pytest.mark.slow
@pytest.mark.parametrize("family, verdict", [
    ("diffusers:fbcache", "hints twice"), ("diffusers:magcache", "hints twice"), ("diffusers:pab", "ok"),
    ("diffusers:taylorseer", "ok"), ("cache-dit:dbcache", "ok"),
])  # fmt: skip
def test_identical_inputs_check_finds_the_vace_hints_added_twice(setup, family, verdict):
    if family.startswith("cache-dit") and not CACHE_DIT:
        pytest.skip("cache-dit is not installed (pip install -e '.[peers]')")
    pipe = setup["pipe"]
    snapshot = PipelineSnapshot(pipe)
    check = Method(family).peer().check_hints(pipe.transformer)
    snapshot.restore()
    assert check.skipped and check.verdict == verdict, check.describe()
    if verdict == "hints twice":
        assert check.max_diff > 1e-2 and check.double_hint_diff < 1e-5  # wrong, and exactly as predicted
        assert check.describe().startswith("broken on VACE")


def test_a_missing_peer_is_a_not_installed_row(setup, monkeypatch):
    monkeypatch.setattr(peers, "installed", lambda package: package != "cache_dit")
    report = run_bench(setup["prep"], setup["pipe"], setup["info"], parse_methods("cache-dit:dbcache"), 0,
                       setup["out"] / "missing", warmup=False)  # fmt: skip
    row = report["methods"][1]
    assert row["status"] == "not installed" and "cache_dit" in row["note"] and "flops" not in row


def test_peer_methods_parse_with_values_and_reject_bad_ones():
    methods = parse_methods("diffusers:fbcache=0.2,cache-dit:dbcache,diffusers:fbcache")
    assert [m.label for m in methods] == ["none", "diffusers:fbcache=0.2", "cache-dit:dbcache", "diffusers:fbcache"]
    assert len(parse_methods("peers")) == 1 + len(PEERS)
    for bad, fragment in (("diffusers:nocache", "unknown peer"), ("diffusers:fbcache=fast", "must be a number"),
                          ("cache-dit:dbcache=-1", ">= 0")):  # fmt: skip
        with pytest.raises(InputError, match=fragment):
            parse_methods(bad)
