"""The HetCache fidelity suite: quality/FLOPs fronts of teacache and hetcache on every suite clip.

    nice -n 10 python scripts/fidelity_suite.py                      # all clips, guidance 1 and 5
    python scripts/fidelity_suite.py --clips photo-pan-large --guidance 5 --out suite_pan
    python scripts/fidelity_suite.py --check                          # exit 1 if an acceptance check fails
    python scripts/fidelity_suite.py --clips shapes-large,photo-still-large --out large  # two more large masks

Clips are generated in code (`hetcache_cli/bench/clips.py`; photographs from scikit-image:
`pip install -e '.[suite]'`). Every clip runs uncached and with each setting of the sweep
(`hetcache_cli/bench/suite.py`) on the embedded model (or `--model`), same seed; PSNR of the
decoded output before paste-back against the uncached run, FLOPs from the per-step records.
Writes OUT/suite.md and OUT/suite.json and prints the Markdown. Deterministic: the numbers do
not depend on the machine's load (the wall time does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=None,
                        help="comma list of clip names (default: the suite's six; shapes-large and photo-still-large, "
                             "two more large masks, run only when named)")
    parser.add_argument("--guidance", default="1,5", help="comma list of guidance scales (default: 1,5)")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps (default: 30)")
    parser.add_argument("--model", default=None, help="diffusers Wan-VACE folder (default: the embedded model)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--out", type=Path, default=Path("fidelity_suite"), help="output folder")
    parser.add_argument("--no-forecast-reference", action="store_true",
                        help="skip the teacache+forecast sweep (faster; issue 26's visible-region check needs it, "
                             "so --check then fails)")
    parser.add_argument("--methods", default=None,
                        help="comma list of methods to run: teacache, forecast-reuse, hetcache (default: all)")
    parser.add_argument("--merge", type=Path, default=None,
                        help="an earlier suite.json (same clips, guidances, steps) that gives the points of the "
                             "methods not run; for rerunning one method after an engine change")
    parser.add_argument("--check", action="store_true", help="exit 1 when an acceptance check is not met")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from hetcache_cli.bench.clips import large_mask_clips, suite_clips
    from hetcache_cli.bench.suite import merge_reports, run_suite
    from hetcache_cli.bench.suite_report import markdown, write_report
    from hetcache_cli.pipeline.model import load_pipeline, resolve_device, resolve_model

    torch.set_num_threads(args.threads)
    clips = suite_clips()
    if args.clips:
        wanted = [c.strip() for c in args.clips.split(",") if c.strip()]
        clips += large_mask_clips()  # outside the default suite: run when named
        names = [c.name for c in clips]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            print(f"error: unknown clip(s) {unknown}; choose from {', '.join(names)}", file=sys.stderr)
            return 2
        clips = [c for c in clips if c.name in wanted]
    try:
        guidances = [float(g) for g in args.guidance.split(",") if g.strip()]
    except ValueError:
        print(f"error: --guidance {args.guidance!r} is not a comma list of numbers, e.g. 1,5", file=sys.stderr)
        return 2
    methods = None
    if args.methods:
        methods = {m.strip() for m in args.methods.split(",") if m.strip()}
        unknown = methods - {"teacache", "forecast-reuse", "hetcache"}
        if unknown:
            print(f"error: unknown method(s) {sorted(unknown)}; choose from teacache, forecast-reuse, hetcache",
                  file=sys.stderr)
            return 2
    earlier = None
    if args.merge is not None:
        try:
            earlier = json.loads(args.merge.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: --merge {args.merge}: cannot read a suite.json ({exc})", file=sys.stderr)
            return 2
        if earlier.get("steps") != args.steps:
            print(f"error: --merge {args.merge} ran {earlier.get('steps')} steps, not {args.steps}", file=sys.stderr)
            return 2
    stand_in = [c.name for c in clips if "scikit-image missing" in c.description]
    if stand_in:
        print(f"warning: scikit-image is not installed: {', '.join(stand_in)} use a stand-in texture, not the "
              "documented photographs, and their numbers differ; pip install -e '.[suite]'", file=sys.stderr)
    ref = resolve_model(args.model)
    pipe = load_pipeline(ref, resolve_device("cpu"), torch.float32)
    started = time.perf_counter()

    def progress(label: str, i: int, total: int) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - started:6.0f} s] {label} ({i + 1}/{total})", file=sys.stderr, flush=True)

    report = run_suite(pipe, clips, guidances, args.steps, not args.no_forecast_reference, progress, methods)
    report["model"] = ref.name
    if earlier is not None:
        try:
            report = merge_reports(report, earlier)
        except ValueError as exc:
            print(f"error: --merge {args.merge}: {exc}", file=sys.stderr)
            return 2
    paths = write_report(report, args.out)
    print(markdown(report))
    print(f"wrote {paths['markdown']} and {paths['json']}", file=sys.stderr)
    s = report["summary"]
    ok = s["front_ok"] and s["balanced_bg_ok"] and s["median_ok"] and s.get("visible_ok") is True
    return 1 if (args.check and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
