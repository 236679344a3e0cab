"""scripts/make_two_expert_model.py, and `hetcache edit` on the folder it writes (the acceptance of issue 16)."""

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import make_two_expert_model as M  # noqa: E402

from hetcache_cli.cli.app import app  # noqa: E402
from hetcache_cli.resources import demo_dir  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def two_expert_dir(tmp_path_factory):
    return M.build(tmp_path_factory.mktemp("models") / "two", boundary_ratio=0.875, scale=0.02, seed=0)


def edit(model, out, *extra):
    args = ["edit", demo_dir() / "input.mp4", "--mask", demo_dir() / "mask.png", "--prompt", "a red ball",
            "--model", model, "--preset", "fast", "-o", out, "--json", *extra]
    return runner.invoke(app, [str(a) for a in args])


def test_the_folder_loads_as_a_two_expert_pipeline(two_expert_dir):
    index = json.loads((two_expert_dir / "model_index.json").read_text())
    assert index["boundary_ratio"] == 0.875 and index["transformer_2"] == ["diffusers", "WanVACETransformer3DModel"]
    assert (two_expert_dir / "hetcache_defaults.json").is_file()


@pytest.mark.slow
def test_edit_runs_both_experts_full_first_within_the_fast_budget(two_expert_dir, tmp_path):
    r = edit(two_expert_dir, tmp_path / "out.mp4", "--dry-run")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert list(plan["experts"]) == ["transformer", "transformer_2"]

    r = edit(two_expert_dir, tmp_path / "out.mp4")
    assert r.exit_code == 0, r.stderr
    stats = json.loads((tmp_path / "out.stats.json").read_text())
    steps = stats["steps"]
    experts = [s["expert"] for s in steps if s["branch"] == "cond"]
    switch = experts.index("transformer_2")
    assert 0 < switch < len(experts) and set(experts[switch:]) == {"transformer_2"}
    assert steps[0]["decision"] == "full"
    assert all(s["decision"] == "full" for s in steps if s["step"] == switch)
    summary = stats["summary"]
    assert {n: e["schedule"][0] for n, e in summary["experts"].items()} == {"transformer": "F", "transformer_2": "F"}
    assert summary["flops_ratio"] <= 0.40, summary
    # the dry run's plan is what ran: the same schedules, forwards and FLOPs, per expert too
    for key in ("schedule", "decisions", "flops", "flops_full", "flops_ratio"):
        assert summary[key] == plan[key], key
    assert {n: (e["schedule"], e["flops"]) for n, e in summary["experts"].items()} == \
        {n: (e["schedule"], e["flops"]) for n, e in plan["experts"].items()}
    assert stats["windows"][0]["tokens"] == plan["tokens"]["total"]
    assert stats["model"]["boundary_ratio"] == 0.875 and "transformer_2" in stats["model"]
