"""`hetcache run --parallel`: the groups of ranks and the exit-2 errors, without starting a process group."""

import pytest
import yaml
from typer.testing import CliRunner

from hetcache_cli.cache.parallel import Layout, parse_layout
from hetcache_cli.cli.app import app
from hetcache_cli.pipeline.group_run import edit_groups


def test_groups_are_consecutive_ranks_of_the_layouts_size():
    assert edit_groups(Layout(cfg=True), 4) == [[0, 1], [2, 3]]
    assert edit_groups(Layout(cfg=True), 2) == [[0, 1]]
    assert edit_groups(Layout(ulysses=4), 8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert edit_groups(parse_layout("cfg,ulysses=2"), 8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert edit_groups(parse_layout("cfg,ulysses=2"), 4) == [[0, 1, 2, 3]]


@pytest.mark.parametrize(("layout", "world", "fix"), [("cfg", 3, "2 or 4"), ("cfg", 1, "2"),
                                                      ("cfg,ulysses=2", 6, "4 or 8"), ("ulysses=4", 2, "4")])
def test_ranks_that_do_not_split_name_the_fix(layout, world, fix):
    with pytest.raises(ValueError, match=f"torchrun --nproc-per-node {fix}$"):
        edit_groups(parse_layout(layout), world)


@pytest.fixture
def batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    spec = tmp_path / "batch.yaml"
    spec.write_text(yaml.safe_dump({"video": "v.mp4", "mask": "m.mp4", "prompt": "p"}))
    return spec


def run(spec, *args):
    return CliRunner().invoke(app, ["run", str(spec), *args])


def test_run_parallel_without_torchrun_exits_2(batch, tmp_path):
    r = run(batch, "--parallel", "cfg")
    assert r.exit_code == 2 and "needs torchrun" in r.stderr and "multiple of 2" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.yaml"]


def test_run_parallel_bad_layout_exits_2(batch):
    r = run(batch, "--parallel", "ring=2")
    assert r.exit_code == 2 and "expected cfg, ulysses=U" in r.stderr


@pytest.mark.parametrize("rank", [0, 1])
def test_run_parallel_on_ranks_that_do_not_split_exits_2_before_any_collective(batch, monkeypatch, rank):
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", str(rank))
    r = run(batch, "--parallel", "cfg")
    assert r.exit_code == 2 and not dist.is_initialized()
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    # every rank says why in one line naming the fix: torchrun stops the others when the first exits
    assert len(lines) == 1 and lines[0].endswith("torchrun --nproc-per-node 2 or 4"), r.stderr
