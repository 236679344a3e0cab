"""The fidelity suite's report: Markdown tables (fronts per clip, acceptance) and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from hetcache_cli.bench.fronts import front_at
from hetcache_cli.bench.suite import CUT_RANGE, EIGHT_BIT_DB, MEDIAN_TARGET, VISIBLE_TOLERANCE_DB, front_of
from hetcache_cli.io.atomic import atomic_write_text

READ_AT = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
REGIONS = (("visible", "visible"), ("inside", "in mask"), ("background", "background"))


def _db(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _method_label(method: str) -> str:
    return {"teacache": "teacache", "hetcache": "hetcache", "forecast-reuse": "teacache + forecast"}.get(method, method)


def fronts_table(row: dict) -> str:
    """Visible-region, in-mask and background fronts of each method read at fixed cuts."""
    methods = [m for m in ("teacache", "forecast-reuse", "hetcache") if any(p["method"] == m for p in row["points"])]
    sweep = [p for p in row["points"] if p["preset"] is None]
    head = "| method | region | " + " | ".join(f"{c:g}x" for c in READ_AT) + " |"
    lines = [head, "|---|---|" + "---|" * len(READ_AT)]
    for m in methods:
        for region, name in REGIONS:
            front = front_of(sweep, m, region)
            lines.append(f"| {_method_label(m)} | {name} | " + " | ".join(_db(front_at(front, c)) for c in READ_AT) + " |")
    return "\n".join(lines)


def points_table(row: dict) -> str:
    lines = ["| setting | schedule | F/P/R | FLOPs cut | PSNR visible | PSNR in | PSNR margin | PSNR bg |",
             "|---|---|---|---|---|---|---|---|"]
    for p in row["points"]:
        d = p["decisions"]
        q = p["psnr"]
        lines.append(f"| {p['label']} | `{p['schedule']}` | {d['full']}/{d['partial']}/{d['reuse']} | "
                     f"{p['flops_cut']:.2f} | {_db(q.get('visible'))} | "
                     f"{_db(q['inside'])} | {_db(q['margin'])} | {_db(q['background'])} |")
    return "\n".join(lines)


def acceptance_table(report: dict) -> str:
    lo, hi = CUT_RANGE
    lines = [f"| clip | guidance | mask | min lead of hetcache's in-mask front over teacache's on {lo:g}-{hi:g}x "
             "(at cut) | balanced: cut, PSNR in, PSNR bg | teacache bg at that cut | bg lead | hetcache's visible "
             "front - step-only with forecast (at cut) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        c = row["checks"]
        bal = next(p for p in row["points"] if p["preset"] == "balanced")
        tea_bg = front_at(front_of([p for p in row["points"] if p["preset"] is None], "teacache", "background"),
                          bal["flops_cut"])
        mask = f"{row['mask_fraction']:.0%} {'moving' if row['moving_mask'] else 'static'}"
        lead = "not covered" if c["front_lead_db"] is None else f"{c['front_lead_db']:+.1f} dB ({c['front_lead_at_cut']:.2f}x)"
        bg_lead = "-" if c["balanced_bg_lead_db"] is None else f"{c['balanced_bg_lead_db']:+.1f} dB"
        lines.append(f"| {row['clip']} | {row['guidance']:g} | {mask} | {lead} | {bal['flops_cut']:.2f}x, "
                     f"{_db(bal['psnr']['inside'])}, {_db(bal['psnr']['background'])} | {_db(tea_bg)} | {bg_lead} | "
                     f"{_leads(c.get('visible_leads_db'))} |")
    return "\n".join(lines)


def _leads(leads: dict | None) -> str:
    if not leads:
        return "-"
    return ", ".join(f"{'not reached' if v is None else f'{v:+.1f}'} ({c}x)" for c, v in leads.items())


def _misses(report: dict, key: str) -> str:
    """'; misses: clip gN at CUTx (lead), ...' for the leads below the tolerance, '' when none."""
    out = [f"{row['clip']} g{row['guidance']:g} at {cut}x ({'not reached' if v is None else f'{v:+.1f}'})"
           for row in report["rows"] for cut, v in (row["checks"].get(key) or {}).items()
           if v is None or v < -VISIBLE_TOLERANCE_DB]  # fmt: skip
    return "; misses: " + ", ".join(out) if out else ""


def _verdict(value) -> str:
    return "not checked (no step-only sweep)" if value is None else ("met" if value else "NOT met")


def markdown(report: dict) -> str:
    s = report["summary"]
    med = s["median_clip_balanced"]
    out = [
        "# HetCache fidelity suite",
        "",
        f"{len(report['rows'])} clip x guidance runs, {report['steps']} steps, model {report.get('model', '?')}; "
        "PSNR (dB) of the decoded output before paste-back against the uncached run of the same process "
        "(visible: the composite after paste-back, over the mask and the band it blends); "
        "FLOPs cut = uncached FLOPs / FLOPs of what ran (analytic, per step and branch). Fronts are the Pareto "
        f"sets of each method's threshold sweep, read by linear interpolation ('-' = outside the swept cuts). "
        f"Wall time {report['wall_s'] / 60:.1f} min.",
        "",
        "## Acceptance",
        "",
        acceptance_table(report),
        "",
        f"- hetcache's in-mask front >= teacache's on every clip, {CUT_RANGE[0]:g}-{CUT_RANGE[1]:g}x: "
        f"**{'met' if s['front_ok'] else 'NOT met'}**",
        f"- balanced's background >= teacache's at the same cut on every clip: **{'met' if s['balanced_bg_ok'] else 'NOT met'}**",
        f"- hetcache's visible-region front >= step-only reuse with the forecast - {VISIBLE_TOLERANCE_DB:g} dB at "
        f"every cut it reaches of 1.5, 2, 3, 4, 5x, on every clip: **{_verdict(s.get('visible_ok'))}**"
        + _misses(report, "visible_leads_db"),
        f"- the same, reading every PSNR above {EIGHT_BIT_DB:.1f} dB (the rounding of an 8-bit video) as "
        f"{EIGHT_BIT_DB:.1f} dB (reported, not part of --check): **{_verdict(s.get('visible_8bit_ok'))}**"
        + _misses(report, "visible_leads_8bit_db"),
        f"- median clip ({s['median_clip']}): balanced {med['psnr_inside']:.1f} dB in the mask at {med['flops_cut']:.2f}x "
        f"(target >= {MEDIAN_TARGET['psnr_inside']:g} dB at >= {MEDIAN_TARGET['cut']:g}x): "
        f"**{'met' if s['median_ok'] else 'NOT met'}**; medians over clips: {s['balanced_median_psnr_inside']:.1f} dB, "
        f"{s['balanced_median_cut']:.2f}x",
        "",
    ]
    for row in report["rows"]:
        out += [
            f"## {row['clip']}, guidance {row['guidance']:g}",
            "",
            f"{row['description']}; {row['frames']} frames {row['width']}x{row['height']}, mask {row['mask_fraction']:.1%} "
            f"of the pixels, tokens: {row['tokens']['generative']} generative, {row['tokens']['margin']} margin, "
            f"{row['tokens']['context']} context of {row['tokens']['total']}.",
            "",
            fronts_table(row),
            "",
            points_table(row),
            "",
        ]
    return "\n".join(out)


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "suite.md", "json": out_dir / "suite.json"}
    atomic_write_text(paths["markdown"], markdown(report) + "\n")
    atomic_write_text(paths["json"], json.dumps(report, indent=2, default=str) + "\n")
    return paths
