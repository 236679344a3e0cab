"""One edit on several gloo ranks (`--parallel`): each layout against one process, the CLI under torchrun,
a killed rank and a layout that does not fit the model. Own lane: `python -m pytest -q -m distributed`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("parallel_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    out = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    out.pop("HETCACHE_DEBUG", None)
    return out


def torchrun(n: int, *args: str, cwd: Path, timeout: float = 540) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), *args]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(("layout", "ranks"), [("cfg", 2), ("ulysses=2", 2), ("cfg,ulysses=2", 4)])
def test_layout_matches_one_process(layout, ranks, tmp_path):
    """Guidance 3, a moving mask; all-FULL, the fast preset, FULL/PARTIAL/REUSE, teacache, none and fp8 K/V in host
    memory: the decoded
    float32 frames within 1e-4 of one process, the same step records, K/V bytes 1/u per rank, PARTIAL traffic
    within 1.1 x the active fraction of FULL's."""
    out = tmp_path / "result.json"
    proc = torchrun(ranks, str(WORKER), layout, str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = json.loads(out.read_text())
    assert set(results) == {"all_full", "fast", "partial", "teacache", "none", "fp8_host"}
    u = 2 if "ulysses" in layout else 1
    for name, r in results.items():
        assert r["max_abs_diff"] <= 1e-4, (name, r["max_abs_diff"])
        assert r["records_equal"] and r["records"] == 2 * r["steps"], name
    assert set(results["partial"]["decisions"]) == {"full", "partial", "reuse"}
    assert "partial" in results["fast"]["decisions"]
    assert set(results["all_full"]["decisions"]) == {"full"}

    hetcache = results["partial"]
    branches_per_rank = 1 if "cfg" in layout else 2
    for case in ("partial", "fp8_host"):  # float K/V with its forecast slopes; fp8 K/V with scales in host memory
        kv = [rank["kv_bytes"] for rank in results[case]["ranks"]]
        single = results[case]["single_kv_bytes"]
        assert single > 0
        # 1/u of the K/V, except the K/V forecast's per-row scale (4 bytes), which every rank keeps for its own
        # heads: a few percent more at this tiny width (bounded by 1/8 here), a fraction of a percent at 1.3B width
        assert all(single <= b * 2 // branches_per_rank * u <= single * 1.125 for b in kv), (case, kv, single)
        if u == 1:
            assert all(b * 2 // branches_per_rank == single for b in kv), (case, kv, single)
    if u > 1:  # `none` under Ulysses splits the work and keeps no cache
        assert all(rank["cache_bytes"] == 0 and rank["kv_bytes"] == 0 for rank in results["none"]["ranks"])
    if u > 1:  # the residual (and its slopes) by S: at most 2u - 1 rows of padding over the ranks
        for rank in hetcache["ranks"]:
            share = hetcache["single_cache_bytes"] * branches_per_rank / 2 / u
            assert share <= rank["cache_bytes"] <= share * 1.05, (rank["cache_bytes"], share)
        r = hetcache["active_fraction"]
        for rank in hetcache["ranks"]:
            t = rank["traffic"]
            per_layer = {k: (t[k]["by_op"]["attention_in"] + t[k]["by_op"]["attention_out"]) / t[k]["forwards"]
                         for k in ("full", "partial")}  # fmt: skip
            assert 0 < per_layer["partial"] <= 1.1 * r * per_layer["full"], (per_layer, r)
            for kind in ("full", "partial"):  # 3 self-attention layers: 2 main, 1 VACE
                assert t[kind]["attention_bytes_per_layer"] == pytest.approx(per_layer[kind] / 3)
            assert "attention_in" not in t["reuse"]["by_op"]  # a REUSE step sends no activations
    else:  # guidance parallel: the prediction is all that crosses per step
        for rank in hetcache["ranks"]:
            for kind in ("full", "partial", "reuse"):
                assert set(rank["traffic"][kind]["by_op"]) <= {"cfg_prediction", "active_set"}


def read_frames(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    return np.stack(frames).astype(np.int16)


def edit_args(small_clip, model, output: str, *extra: str) -> list[str]:
    return ["-m", "hetcache_cli", "edit", str(small_clip["video"]), "--mask", str(small_clip["mask"]), "--prompt",
            "a red ball", "--model", str(model), "--steps", "6", "--guidance-scale", "3", "--schedule", "FPPRFP",
            "--crf", "0", "--output", output, "--json", *extra]  # fmt: skip


def test_cli_edit_on_two_ranks_writes_once(small_clip, tiny_model_dir, tmp_path):
    """torchrun edit --parallel ulysses=2: rank 0 alone writes the output and statistics; the steps and the
    lossless frames are those of the single-process edit; the statistics report the ranks."""
    one = tmp_path / "one"
    one.mkdir()
    single = subprocess.run([sys.executable, *edit_args(small_clip, tiny_model_dir, "one.mp4")], cwd=one, env=env(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert single.returncode == 0, single.stderr[-4000:]
    two = tmp_path / "two"
    two.mkdir()
    proc = torchrun(2, *edit_args(small_clip, tiny_model_dir, "two.mp4", "--parallel", "ulysses=2"), cwd=two)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert json.loads(proc.stdout)["output"] == "two.mp4"  # printed once, by rank 0
    assert sorted(p.name for p in two.iterdir()) == ["two.mp4", "two.stats.json"]
    a, b = (json.loads((d / f"{n}.stats.json").read_text()) for d, n in ((one, "one"), (two, "two")))
    key = lambda doc: [(s["step"], s["branch"], s["decision"], s["tokens"]) for s in doc["steps"]]  # noqa: E731
    assert key(a) == key(b) and len(key(a)) == 12
    assert np.abs(read_frames(one / "one.mp4") - read_frames(two / "two.mp4")).max() <= 1
    par = b["parallel"]
    assert par["layout"] == "ulysses=2" and par["world_size"] == 2 and par["backend"] == "gloo"
    assert [r["rank"] for r in par["ranks"]] == [0, 1]
    assert all(r["kv_measured_bytes"] > 0 for r in par["ranks"])


def test_killed_rank_ends_the_others(small_clip, tiny_model_dir, tmp_path):
    """SIGKILL on rank 1 mid-run: rank 0 exits non-zero within 60 s with one error line; no output file."""
    port = free_port()
    procs = []
    for rank in range(2):
        rank_env = dict(env(), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        args = edit_args(small_clip, tiny_model_dir, "out.mp4", "--parallel", "cfg", "--steps", "500", "--schedule",
                         "F" * 500, "--rank-timeout", "30")  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=rank_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not any(p.name.startswith(".") for p in tmp_path.iterdir()):  # rank 0's work folder: the loop began
            assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()[1][-3000:]
            time.sleep(0.2)
        time.sleep(1)
        assert procs[0].poll() is None and procs[1].poll() is None
        os.kill(procs[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 1, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: rank 0 lost the other ranks"), err[-3000:]
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.stats.json").exists()


def test_ulysses_degree_must_divide_the_heads(small_clip, tiny_model_dir, tmp_path):
    """ulysses=3 on a 4-head model: every rank exits 2, the one-line reason (naming the fix) once, nothing written."""
    proc = torchrun(3, *edit_args(small_clip, tiny_model_dir, "out.mp4", "--parallel", "ulysses=3"), cwd=tmp_path)
    assert proc.stderr.count("exitcode  : 2") == 3, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --parallel ulysses=3: the model has 4 attention heads, which 3 does not divide; "
                      "use ulysses=2 | 4"], proc.stderr[-4000:]  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory):
    """9 frames 320x320 (wider than the VAE's 256-px tile), a small static mask."""
    from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render
    from hetcache_cli.io.video import write_video

    root = tmp_path_factory.mktemp("wide")
    frames, _ = render(SceneSpec(9, 320, 320, shapes=[MovingShape("ball", "white", 8, (160, 160), (0.2, 0.2))],
                                 texture_seed=5))  # fmt: skip
    mask = np.zeros((320, 320), np.uint8)
    mask[150:175, 150:175] = 255
    cv2.imwrite(str(mask_path := root / "mask.png"), mask)
    return {"video": write_video(root / "clip.mp4", frames, 8, lossless=True), "mask": mask_path}


def test_cli_edit_with_vae_tiling_on_two_ranks(wide_clip, tiny_model_dir, tmp_path):
    """--vae-tiling under edit --parallel ulysses=2 on a 320-px crop (tiled: wider than the VAE's 256-px tile):
    the flag reaches every rank (each encodes the conditioning, rank 0 decodes) and the output is the tiled
    single-process edit's."""
    tiled = ["--vae-tiling", "--max-area", str(320 * 320), "--crop-min-size", "320", "--vae-decode", "full"]
    one = tmp_path / "one"
    one.mkdir()
    proc = subprocess.run([sys.executable, *edit_args(wide_clip, tiny_model_dir, "one.mp4", *tiled)], cwd=one,
                          env=env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = tmp_path / "two"
    two.mkdir()
    proc = torchrun(2, *edit_args(wide_clip, tiny_model_dir, "two.mp4", "--parallel", "ulysses=2", *tiled), cwd=two)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert json.loads(proc.stdout)["width"] == 320
    assert np.abs(read_frames(two / "two.mp4") - read_frames(one / "one.mp4")).max() <= 1
