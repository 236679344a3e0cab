"""Help and input errors that need no model answer without importing torch or diffusers (scripts/bench_cli.py times them)."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers", "cv2", "cache_dit")

# runs the CLI in a fresh interpreter and reports, at exit, which heavy packages it imported
DRIVER = """
import atexit, json, sys
atexit.register(lambda: print("IMPORTED " + json.dumps([m for m in %r if m in sys.modules]), file=sys.stderr))
sys.argv = ["hetcache"] + json.loads(sys.argv[1])
from hetcache_cli.cli.app import main
main()
""" % (HEAVY,)


def run_cli(args, cwd):
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([str(a) for a in args])],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("IMPORTED ")][-1]
    return proc.returncode, json.loads(line.removeprefix("IMPORTED ")), proc.stdout + proc.stderr


@pytest.fixture
def files(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"not decoded by these checks")
    (tmp_path / "mask.png").write_bytes(b"")
    (tmp_path / "clip_edited.mp4").write_bytes(b"")
    (tmp_path / "bad.yaml").write_text("video: clip.mp4\nmask: mask.png\nprompt: a red ball\nstepz: 4\n")
    return tmp_path


@pytest.mark.parametrize("args, code, fragment", [
    (["--help"], 0, "edit"),
    (["edit", "--help"], 0, "--preset"),
    (["bench", "--help"], 0, "--sweep"),
    (["calibrate", "--help"], 0, "--targets"),
    (["mask", "--help"], 0, "--track"),
    (["memory", "--help"], 0, "--cache-dtype"),
    (["edit", "missing.mp4", "-m", "mask.png", "-p", "a red ball"], 2, "video missing.mp4 does not exist"),
    (["edit", "clip.mp4", "-m", "nomask.png", "-p", "a red ball"], 2, "mask nomask.png does not exist"),
    (["edit", "clip.mp4", "-m", "mask.png", "-p", "a red ball"], 2, "already exists; pass --overwrite"),
    (["edit", "clip.mp4", "--box", "1,2,30,40", "-p", "a red ball"], 2, "already exists; pass --overwrite"),
    (["edit", "--spec", "bad.yaml"], 2, "unknown key 'stepz'"),
    (["edit", "clip.mp4", "--bogus"], 2, "No such option"),
    (["edit", "clip.mp4", "-m", "mask.png", "-p", "x", "--preset", "ludicrous"], 2, "preset 'ludicrous'"),
    (["bench", "missing.mp4", "-m", "mask.png", "-p", "a red ball"], 2, "video missing.mp4 does not exist"),
    (["bench", "clip.mp4", "-m", "mask.png", "-p", "x", "--methods", "diffusers:nocache"], 2, "unknown peer"),
    (["calibrate", "missing.mp4", "-m", "mask.png", "-p", "x"], 2, "video missing.mp4 does not exist"),
    (["calibrate", "clip.mp4", "-m", "mask.png", "-p", "x", "--targets", "fast=50"], 2, "lower PSNR"),
    (["mask", "missing.mp4", "--box", "1,2,30,40"], 2, "video missing.mp4 does not exist"),
    (["mask", "clip.mp4", "--box", "1,2,30,40", "--tracker", "t"], 2, "--tracker is used only when SAM 2 tracks"),
    (["selftest", "--device", "gpu"], 2, "is not valid"),
    (["eval", "--help"], 0, "--side-by-side"),
    (["eval", "clip.mp4", "-r", "clip.mp4", "--side-by-side", "nowhere/cmp.mp4"], 2, "folder nowhere for --side-by-side"),
    (["edit", "clip.mp4", "-m", "mask.png", "-p", "x", "--preview-frame", "-1"], 2, "--preview-frame -1 is negative"),
    (["edit", "clip.mp4", "-m", "mask.png", "-p", "x", "-o", "nowhere/o.mp4", "--preview"], 2, "output folder nowhere"),
    (["edit", "clip.mp4", "-m", "mask.png", "-p", "x", "--parallel", "cfg"], 2, "start the edit with torchrun"),
    (["edit", "clip.mp4", "-m", "mask.png", "-p", "x", "--parallel", "ring=2"], 2, "expected cfg, ulysses=U"),
])  # fmt: skip
def test_help_and_input_errors_import_no_torch(files, args, code, fragment):
    returncode, imported, output = run_cli(args, files)
    assert returncode == code, output
    assert fragment in output
    assert imported == [], f"{args} imported {imported}"


def test_the_driver_sees_heavy_imports_when_a_command_makes_them(files):
    # the check above can fail: eval reads its videos with cv2 / imageio before it can say one is missing
    returncode, imported, output = run_cli(["eval", "missing.mp4", "-r", "clip.mp4"], files)
    assert returncode == 2 and "cv2" in imported, output
