"""`hetcache run` shared among ranks: the claim order, the pieces, and two gloo ranks under torchrun."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from hetcache_cli.errors import HetcacheError
from hetcache_cli.pipeline.distributed import (
    RankInfo,
    claim_order,
    estimate,
    rank_device,
    rank_info_from_env,
    wait_for_ranks,
)

REPO = Path(__file__).resolve().parents[2]


def simulate_claims(units: list[list[int]], costs: list[float], world_size: int) -> list[float]:
    """Finish time of each rank when idle ranks claim the next unit (lowest rank first on ties)."""
    free_at = [0.0] * world_size
    for unit in units:
        r = min(range(world_size), key=lambda k: (free_at[k], k))
        free_at[r] += sum(costs[i] for i in unit)
    return free_at


def test_claim_order_is_longest_first_with_ties_in_spec_order():
    assert claim_order([1.0, 5.0, 0.0, 5.0, 2.0]) == [[1], [3], [4], [0], [2]]
    assert claim_order([]) == []


def test_edits_sharing_an_output_are_one_unit_in_spec_order():
    units = claim_order([1.0, 3.0, 2.0, 1.0], ["a", "b", "a", None])
    assert units == [[0, 2], [1], [3]]
    with pytest.raises(ValueError):
        claim_order([1.0], ["a", "b"])


def test_longest_first_claims_balance_ranks():
    # Six short edits then a long one: in spec order one rank gets the long edit last.
    costs = [1.0] * 6 + [6.0]
    in_spec_order = [[i] for i in range(len(costs))]
    assert max(simulate_claims(in_spec_order, costs, 2)) == 9.0
    assert max(simulate_claims(claim_order(costs), costs, 2)) == 6.0
    # Graham's bound for longest-first list scheduling: makespan <= (4/3 - 1/(3m)) OPT.
    costs = [7.0, 7.0, 6.0, 6.0, 5.0, 5.0, 4.0, 4.0, 4.0]
    opt = sum(costs) / 3
    assert max(simulate_claims(claim_order(costs), costs, 3)) <= (4 / 3 - 1 / 9) * opt


def test_rank_info_and_device():
    assert rank_info_from_env({}) is None
    assert rank_info_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert rank_info_from_env({"WORLD_SIZE": "4", "RANK": "5", "LOCAL_RANK": "1"}) == RankInfo(5, 4, 1)
    with pytest.raises(HetcacheError, match="WORLD_SIZE"):
        rank_info_from_env({"WORLD_SIZE": "2"})
    assert rank_device("auto", 3, 8) == "cuda:3"
    assert rank_device("cuda", 9, 8) == "cuda:1"
    assert rank_device("auto", 3, 0) == "cpu"
    assert rank_device("cpu", 3, 8) == "cpu"
    assert rank_device("cuda:5", 3, 8) == "cuda:5"
    assert rank_device("cuda", 1, 0) == "cuda"


def test_estimate_reads_the_edits_plan(small_clip, tmp_path, monkeypatch):
    import hetcache_cli.io.frames as frames

    monkeypatch.setattr(frames.FrameStream, "__init__", None)  # planning decodes no frame
    base = {"video": str(small_clip["video"]), "mask": str(small_clip["mask"]), "prompt": "p", "steps": 3}
    out = tmp_path / "o.mp4"
    cost, key = estimate("e", {**base, "output": str(out), "guidance_scale": 5.0}, overwrite=False)
    assert cost == 9 * 64 * 64 * 3 * 2 and key == str(out.resolve())
    cost, _ = estimate("e", {**base, "output": str(out), "guidance_scale": 1.0, "frames": 5}, overwrite=False)
    assert cost == 5 * 64 * 64 * 3
    assert estimate("e", {**base, "video": str(tmp_path / "missing.mp4"), "output": str(out)}, False)[0] == 0.0
    assert estimate("e", ValueError("bad spec"), False) == (0.0, None)
    out.write_bytes(b"done before")
    assert estimate("e", {**base, "output": str(out)}, overwrite=False)[0] == 0.0
    assert estimate("e", {**base, "output": str(out)}, overwrite=True)[0] > 0


def test_waiting_rank_gives_up_on_a_silent_rank():
    from torch.distributed import HashStore

    store = HashStore()
    stop = threading.Event()

    def beat():  # rank 1 beats until the test ends; rank 2 never beats; neither finishes
        while not stop.wait(0.02):
            store.add("p/beat/1", 1)

    beats = threading.Thread(target=beat, daemon=True)
    beats.start()
    start = time.monotonic()
    try:
        with pytest.raises(HetcacheError, match="rank 2 has not answered"):
            wait_for_ranks(store, "p", 0, 3, timeout_s=1.0, poll_s=0.05)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        beats.join()
    assert 1.0 <= elapsed < 30  # gave up after the timeout, not never


def test_waiting_rank_returns_when_all_finish():
    from torch.distributed import HashStore

    store = HashStore()
    late = threading.Timer(0.3, lambda: store.add("p/finished", 1))
    late.start()
    wait_for_ranks(store, "p", 0, 2, timeout_s=30, poll_s=0.05)
    assert store.add("p/finished", 0) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_share_a_batch(small_clip, tiny_model_dir, tmp_path):
    common = {"mask": str(small_clip["mask"]), "model": str(tiny_model_dir), "steps": 1, "cache": {"method": "none"}}
    video = str(small_clip["video"])
    edits = [
        {"video": video, "prompt": "a red ball", "output": "a.mp4"},
        {"video": "missing.mp4", "prompt": "a blue ball", "output": "b.mp4"},
        {"video": video, "prompt": "a green ball", "output": "c.mp4", "steps": 2},
        {"video": video, "prompt": "a pink ball", "output": "d.mp4", "frames": 5},
    ]
    spec = tmp_path / "batch.yaml"
    spec.write_text(yaml.safe_dump({"defaults": common, "edits": edits}))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("HETCACHE_DEBUG", None)

    def launch() -> subprocess.CompletedProcess:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(free_port()), "-m", "hetcache_cli", "run", str(spec), "--json",
        ]  # fmt: skip
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)

    proc = launch()
    report = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode != 0, report  # torchrun reports any rank's non-zero exit as its own failure
    # Both ranks agreed on exit code 2 (the only failure is bad input); torchrun names each.
    assert proc.stderr.count("exitcode  : 2") == 2 and "exitcode  : 1" not in proc.stderr, report

    summary = json.loads((tmp_path / "hetcache_run_summary.json").read_text())
    assert json.loads(proc.stdout) == {**summary, "summary": "hetcache_run_summary.json"}, report
    assert summary["world_size"] == 2 and summary["exit_code"] == 2
    assert (summary["done"], summary["skipped"], summary["failed"]) == (3, 0, 1)
    records = summary["edits"]
    assert [r["name"] for r in records] == [f"{spec}[{i}]" for i in range(4)]
    assert [r["status"] for r in records] == ["done", "failed", "done", "done"]
    assert "missing.mp4" in records[1]["error"] and records[1]["exit_code"] == 2
    assert {r["rank"] for r in records if r["status"] == "done"} == {0, 1}
    assert all(r["device"] == "cpu" for r in records if r["status"] == "done")
    assert [r["frames"] for r in records] == [9, None, 9, 5]
    assert summary["wall_s"] > 0 and summary["edits_per_hour"] > 0
    assert summary["frames_per_s"] == pytest.approx(23 / summary["wall_s"])
    assert [r["edits"] for r in summary["ranks"]] and sum(r["edits"] for r in summary["ranks"]) == 4

    # Every output exactly once, nothing partial, each with its statistics.
    expected = {"batch.yaml", "hetcache_run_summary.json"} | {f"{s}{x}" for s in "acd" for x in (".mp4", ".stats.json")}
    assert {p.name for p in tmp_path.iterdir()} == expected, report
    for s in "acd":
        stats = json.loads((tmp_path / f"{s}.stats.json").read_text())
        assert stats["model"]["device"] == "cpu"

    # Run again: finished outputs are skipped on whichever rank claims them.
    again = launch()
    second = json.loads(again.stdout)
    assert [r["status"] for r in second["edits"]] == ["skipped", "failed", "skipped", "skipped"], again.stderr[-4000:]


def test_single_process_writes_a_summary_only_when_asked(small_clip, tmp_path, monkeypatch):
    import torch.distributed as dist
    from typer.testing import CliRunner

    from hetcache_cli.cli.app import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    (tmp_path / "done.mp4").write_bytes(b"finished earlier")
    base = {"mask": str(small_clip["mask"]), "prompt": "p"}
    edits = [{**base, "video": str(small_clip["video"]), "output": "done.mp4"}, {**base, "video": "missing.mp4"}]
    spec = tmp_path / "batch.yaml"
    spec.write_text(yaml.safe_dump({"edits": edits}))

    r = CliRunner().invoke(app, ["run", str(spec), "--json"])
    assert r.exit_code == 2 and [e["status"] for e in json.loads(r.stdout)["edits"]] == ["skipped", "failed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.yaml", "done.mp4"]
    assert not dist.is_initialized()

    r = CliRunner().invoke(app, ["run", str(spec), "--quiet", "--summary", "out/s.json"])
    assert r.exit_code == 2 and r.stdout == ""
    doc = json.loads((tmp_path / "out" / "s.json").read_text())
    assert (doc["world_size"], doc["done"], doc["skipped"], doc["failed"], doc["exit_code"]) == (1, 0, 1, 1, 2)
    assert [e["rank"] for e in doc["edits"]] == [0, 0] and doc["edits_per_hour"] == 0.0

    r = CliRunner().invoke(app, ["run", str(spec), "--rank-timeout", "0"])
    assert r.exit_code == 2 and "--rank-timeout" in r.stderr


class _Exited(Exception):
    pass


@pytest.mark.parametrize("code, expected", [(None, 0), (0, 0), (2, 2), ("bad", 1)])
def test_a_rank_leaves_with_the_commands_code_without_the_teardown(code, expected, monkeypatch, capsys):
    """After a process group, `main` ends the process with os._exit and the command's exit code (streams flushed);
    without one it leaves by the interpreter's normal SystemExit."""
    from hetcache_cli.cli import app as app_module
    from hetcache_cli.pipeline import distributed

    codes = []

    def fake_exit(value):
        codes.append(value)
        raise _Exited

    def command():
        raise SystemExit(code)

    monkeypatch.setattr(distributed.os, "_exit", fake_exit)
    monkeypatch.setattr(app_module, "app", command)
    monkeypatch.setattr(distributed, "group_started", False)
    with pytest.raises(SystemExit) as normal:
        app_module.main()
    assert normal.value.code == code and codes == []

    monkeypatch.setattr(distributed, "group_started", True)
    with pytest.raises(_Exited):
        app_module.main()
    assert codes == [expected]
    if isinstance(code, str):
        assert code in capsys.readouterr().err
