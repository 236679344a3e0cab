"""Wall time of `hetcache` answers that need no model: --help, edit --help and input errors.

Each command runs `--runs` times in a fresh process (the installed `hetcache` entry point, or
`python -m hetcache_cli` with --module); the median, min and max are printed, and written as JSON
with --json. Run it on an idle machine for numbers to quote; on a shared one, say so.

    python scripts/bench_cli.py --runs 7
    python scripts/bench_cli.py --runs 5 --json cli_times.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = (
    ("hetcache --help", ["--help"], 0),
    ("hetcache edit --help", ["edit", "--help"], 0),
    ("edit: missing video", ["edit", "missing.mp4", "-m", "mask.png", "-p", "a red ball"], 2),
    ("edit: unknown spec key", ["edit", "--spec", "bad.yaml"], 2),
    ("edit: unknown flag", ["edit", "clip.mp4", "--bogus"], 2),
    ("edit: output exists", ["edit", "clip.mp4", "-m", "mask.png", "-p", "a red ball"], 2),
)


def command(module: bool) -> list[str]:
    if module:
        return [sys.executable, "-m", "hetcache_cli"]
    exe = shutil.which("hetcache")
    if exe is None:
        sys.exit("no `hetcache` on PATH: pip install -e . first, or pass --module")
    return [exe]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs per command (median reported)")
    p.add_argument("--module", action="store_true", help="run `python -m hetcache_cli` instead of the entry point")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    base = command(args.module)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "clip.mp4").write_bytes(b"")
        (folder / "mask.png").write_bytes(b"")
        (folder / "clip_edited.mp4").write_bytes(b"")
        (folder / "bad.yaml").write_text("video: clip.mp4\nmask: mask.png\nprompt: a red ball\nstepz: 4\n")
        for name, argv, expected in CASES:
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                proc = subprocess.run(base + argv, cwd=folder, capture_output=True, text=True)
                times.append(time.perf_counter() - start)
                if proc.returncode != expected:
                    sys.exit(f"{name}: exit {proc.returncode}, expected {expected}:\n{proc.stdout}{proc.stderr}")
            results.append({"case": name, "args": argv, "median_s": statistics.median(times), "min_s": min(times),
                            "max_s": max(times), "runs": args.runs})  # fmt: skip
    width = max(len(r["case"]) for r in results)
    print(f"{'case':<{width}}  median s   min s   max s  ({args.runs} runs each)")
    for r in results:
        print(f"{r['case']:<{width}}  {r['median_s']:8.3f}  {r['min_s']:6.3f}  {r['max_s']:6.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
