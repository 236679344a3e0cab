"""`hetcache run --parallel cfg` on 4 gloo ranks: two groups of two share a batch; each edit equals the one-process
edit of the same spec, only the groups' first ranks write. Own lane: `python -m pytest -q -m distributed`."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from tests.distributed.test_parallel import env, free_port, read_frames, torchrun

pytestmark = pytest.mark.distributed


def test_run_parallel_cfg_on_two_groups(small_clip, tiny_model_dir, tmp_path):
    common = {"mask": str(small_clip["mask"]), "model": str(tiny_model_dir), "steps": 6, "guidance_scale": 3.0,
              "cache": {"schedule": "FPPRFP"}, "crf": 0}  # fmt: skip
    video = str(small_clip["video"])
    edits = [
        {"video": video, "prompt": "a red ball", "output": "a.mp4"},
        {"video": "missing.mp4", "prompt": "a blue ball", "output": "b.mp4"},
        {"video": video, "prompt": "a green ball", "output": "c.mp4", "frames": 5},
    ]
    doc = yaml.safe_dump({"defaults": common, "edits": edits})
    one, four = tmp_path / "one", tmp_path / "four"
    for d in (one, four):
        d.mkdir()
        (d / "batch.yaml").write_text(doc)
    # one process, one edit after the other: each edit as `hetcache edit` runs it (cli/run.py calls the same code)
    single = subprocess.run([sys.executable, "-m", "hetcache_cli", "run", "batch.yaml", "--json"], cwd=one,
                            env=env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert single.returncode == 2, single.stderr[-4000:]

    proc = torchrun(4, "-m", "hetcache_cli", "run", "batch.yaml", "--parallel", "cfg", "--json", cwd=four)
    report = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-8000:]}"
    assert proc.stderr.count("exitcode  : 2") == 4 and "exitcode  : 1" not in proc.stderr, report
    summary = json.loads((four / "hetcache_run_summary.json").read_text())
    assert json.loads(proc.stdout) == {**summary, "summary": "hetcache_run_summary.json"}, report  # printed once
    assert summary["parallel"] == {"layout": "cfg", "groups": [[0, 1], [2, 3]]}
    records = summary["edits"]
    assert [r["status"] for r in records] == ["done", "failed", "done"], report
    assert "missing.mp4" in records[1]["error"] and records[1]["exit_code"] == 2
    assert {r["rank"] for r in records if r["status"] == "done"} <= {0, 2}  # the groups' first ranks
    assert [r["frames"] for r in records] == [9, None, 5]

    # only the groups' first ranks wrote, each output once, with its statistics
    expected = {"batch.yaml", "hetcache_run_summary.json"} | {f"{s}{x}" for s in "ac" for x in (".mp4", ".stats.json")}
    assert {p.name for p in four.iterdir()} == expected, report
    key = lambda d: [(s["step"], s["branch"], s["decision"], s["tokens"]) for s in d["steps"]]  # noqa: E731
    diffs = {}
    for s in "ac":
        a, b = (json.loads((d / f"{s}.stats.json").read_text()) for d in (one, four))
        assert key(a) == key(b) and len(key(a)) == 12, s
        par = b["parallel"]
        assert par["layout"] == "cfg" and par["world_size"] == 2 and [r["rank"] for r in par["ranks"]] == [0, 1]
        diffs[s] = int(np.abs(read_frames(one / f"{s}.mp4") - read_frames(four / f"{s}.mp4")).max())
    print("max abs diff of the lossless frames (0-255):", diffs)
    assert max(diffs.values()) == 0, diffs  # lossless frames bit-equal (measured: 0 for both edits)


def test_run_parallel_needs_a_multiple_of_the_layout(tmp_path):
    """3 ranks for cfg (2 per edit): the ranks exit 2 before any collective (torchrun may stop a slower one with
    SIGTERM first), each rank that got there says why in one line naming the fix, nothing written."""
    (tmp_path / "batch.yaml").write_text("video: v.mp4\nmask: m.mp4\nprompt: p\n")
    proc = torchrun(3, "-m", "hetcache_cli", "run", "batch.yaml", "--parallel", "cfg", cwd=tmp_path)
    codes = re.findall(r"exitcode  : (-?\d+)", proc.stderr)
    assert "2" in codes and set(codes) <= {"2", "-15"}, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    message = ("error: run --parallel cfg runs each edit on 2 ranks, and 3 ranks do not split into groups of 2: "
               "start it with torchrun --nproc-per-node 2 or 4")  # fmt: skip
    assert set(errors) == {message} and codes.count("2") <= len(errors) <= 3, proc.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.yaml"]


def test_killed_rank_ends_every_rank(small_clip, tiny_model_dir, tmp_path):
    """Both groups busy with a long edit, SIGKILL on rank 1: rank 0 exits 1 with one error line at once, the other
    group's ranks (whose own collectives do not notice) exit 1 within 60 s (--rank-timeout 20); no output file."""
    common = {"video": str(small_clip["video"]), "mask": str(small_clip["mask"]), "prompt": "p",
              "model": str(tiny_model_dir), "steps": 500, "guidance_scale": 3.0, "cache": {"schedule": "F" * 500}}
    edits = [{"output": "a.mp4"}, {"output": "b.mp4"}]
    (tmp_path / "batch.yaml").write_text(yaml.safe_dump({"defaults": common, "edits": edits}))
    port = free_port()
    procs = []
    for rank in range(4):
        rank_env = dict(env(), RANK=str(rank), WORLD_SIZE="4", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="4",
                        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        args = ["-m", "hetcache_cli", "run", "batch.yaml", "--parallel", "cfg", "--rank-timeout", "20"]
        procs.append(subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=rank_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while sum(p.name.startswith(".") for p in tmp_path.iterdir()) < 2:  # both leaders' work folders
            assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()[1][-3000:]
            time.sleep(0.2)
        time.sleep(2)
        assert all(p.poll() is None for p in procs)
        os.kill(procs[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        errs = {r: procs[r].communicate(timeout=90)[1] for r in (0, 2, 3)}
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    print(f"every rank gone {waited:.1f} s after the kill")
    assert waited < 60, waited
    assert [procs[r].returncode for r in (0, 2, 3)] == [1, 1, 1], errs
    lines = [line for line in errs[0].splitlines() if line.strip()]
    assert lines[-1].startswith("error: rank 0 lost the"), errs
    assert not {"a.mp4", "b.mp4", "hetcache_run_summary.json"} & {p.name for p in tmp_path.iterdir()}
