"""`hetcache run --parallel cfg` on 4 gloo ranks: two groups of two share a batch; each edit equals the one-process
edit of the same spec, only the groups' first ranks write. Own lane: `python -m pytest -q -m distributed`."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.distributed.test_parallel import env, read_frames, torchrun

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
    SIGTERM first), one line on rank 0 naming the fix, nothing written."""
    (tmp_path / "batch.yaml").write_text("video: v.mp4\nmask: m.mp4\nprompt: p\n")
    proc = torchrun(3, "-m", "hetcache_cli", "run", "batch.yaml", "--parallel", "cfg", cwd=tmp_path)
    codes = re.findall(r"exitcode  : (-?\d+)", proc.stderr)
    assert "2" in codes and set(codes) <= {"2", "-15"}, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: run --parallel cfg runs each edit on 2 ranks, and 3 ranks do not split into groups "
                      "of 2: start it with torchrun --nproc-per-node 2 or 4"], proc.stderr[-4000:]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.yaml"]
