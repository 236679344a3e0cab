"""Bench reports: a Markdown table (and notes), a JSON file and a PNG plot."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hetcache_cli.bench.sweep import fronts, psnr_visible
from hetcache_cli.io.atomic import atomic_write_bytes, atomic_write_text

COLUMNS = (
    ("method", "method"),
    ("status", "status"),
    ("schedule", "schedule"),
    ("wall s", "wall_s"),
    ("edit speedup", "speedup"),
    ("DiT speedup", "transformer_speedup"),
    ("FLOPs cut", "flops_cut"),
    ("analytic cut", "analytic_cut"),
    ("efficiency", "efficiency"),
    ("cache MiB", "cache_memory_bytes"),
    ("F/P/R", "decisions"),
    ("PSNR visible", ("psnr", "visible")),
    ("PSNR in", ("psnr", "inside")),
    ("PSNR margin", ("psnr", "margin")),
    ("PSNR bg", ("psnr", "background")),
    ("SSIM in", ("ssim", "inside")),
    ("SSIM bg", ("ssim", "background")),
    ("warp err", ("temporal", "pred", "all")),
)
_COLORS = {"F": "#c0392b", "P": "#f39c12", "R": "#27ae60"}


def _fmt(key, value) -> str:
    if value is None:
        return "-"
    if key == "decisions":
        return f"{value['full']}/{value['partial']}/{value['reuse']}"
    if key in ("peak_memory_bytes", "cache_memory_bytes"):
        return f"{value / 2**20:.1f}"
    if key == "schedule":
        return value if len(value) <= 30 else value[:27] + "..."
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def cell(row: dict, key) -> str:
    if isinstance(key, tuple):
        value = row.get("quality")
        for part in key:
            value = None if value is None else value.get(part)
        return _fmt(key[0], value)
    return _fmt(key, row.get(key))


STAGE_COLUMNS = (("read", "read"), ("text", "text_encode"), ("VAE enc", "vae_encode"), ("denoise", "denoise"),
                 ("of it DiT", "transformer"), ("VAE dec", "vae_decode"), ("composite", "composite"),
                 ("write", "write"))  # fmt: skip


def stage_lines(rows: list[dict]) -> list[str]:
    """Where each method's edit spent its time (seconds of the counted run, the statistics' stage split)."""
    rows = [row for row in rows if row.get("stages")]
    if not rows:
        return []
    out = ["", "", "Where the time goes (seconds of the counted run; the bench decodes the whole crop to compare "
           "outputs before paste-back, an edit decodes only the pasted region):", "",
           "| method | " + " | ".join(name for name, _ in STAGE_COLUMNS) + " |", "|---|" + "---|" * len(STAGE_COLUMNS)]
    for row in rows:
        out.append(f"| {row['method']} | " + " | ".join(f"{row['stages'].get(k, 0.0):.2f}" for _, k in STAGE_COLUMNS)
                   + " |")  # fmt: skip
    return out


def step_reuse_lines(rows: list[dict], cuts=(1.5, 2.0, 3.0, 4.0, 5.0)) -> list[str]:
    """With both `hetcache` and `teacache+forecast` rows: their visible-region fronts read at `cuts` (linear
    between front points, '-' outside the swept range) and HetCache's lead, the fidelity suite's issue-26 reading."""
    from hetcache_cli.bench.fronts import front_at, pareto_front
    from hetcache_cli.bench.methods import FORECAST_REUSE

    def front(family: str):
        return pareto_front((r["flops_cut"], psnr_visible(r)) for r in rows if r["family"] == family
                            and r.get("status") == "ok" and r.get("flops_cut") is not None
                            and psnr_visible(r) is not None)  # fmt: skip

    ours, step_only = front("hetcache"), front(FORECAST_REUSE)
    if not ours or not step_only:
        return []

    def db(value) -> str:
        return "-" if value is None else f"{value:.1f}"

    out = ["", "", "Do the PARTIAL steps pay here? Visible-region PSNR of each front at a FLOPs cut (step reuse with "
           "the forecast keeps no K/V caches):", "",
           "| front | " + " | ".join(f"{c:g}x" for c in cuts) + " |", "|---|" + "---|" * len(cuts)]
    a, b = [front_at(ours, c) for c in cuts], [front_at(step_only, c) for c in cuts]
    out.append("| hetcache | " + " | ".join(db(v) for v in a) + " |")
    out.append("| teacache+forecast | " + " | ".join(db(v) for v in b) + " |")
    out.append("| hetcache's lead | " + " | ".join("-" if x is None or y is None else f"{x - y:+.1f}"
                                                    for x, y in zip(a, b)) + " |")  # fmt: skip
    return out


def markdown(report: dict) -> str:
    timed = all(row.get("timed", True) for row in report["methods"])
    runs = f"median of {report['repeat']} timed run(s)" if timed else "times of the instrumented run (not timed)"
    head = (
        f"# hetcache bench\n\n{report['frames']} frames {report['width']}x{report['height']}, "
        f"{report['steps']} steps, guidance {report.get('guidance_scale', '-')}, model {report['model']} on "
        f"{report['device']} ({report['dtype']}), {runs}. Speedups and quality are against the uncached run "
        "(`none`) of the same process. FLOPs cut = uncached / method FLOPs, both counted from what ran (every "
        "linear layer, patch embedding and attention call of the transformer); analytic cut is HetCache's own "
        "count. Edit speedup is the whole edit's (frames read, text and VAE passes, denoising, compositing, frames "
        "written); DiT speedup counts the transformer only; efficiency = DiT speedup / FLOPs cut. Schedule: ours as "
        "planned; a peer's from its measured FLOPs per step (F >= 95% of uncached, R <= 5%, P between). Quality "
        "compares model outputs before paste-back (PSNR dB, capped at 100 = identical; SSIM), inside the mask, "
        "in the margin band and in the background; PSNR visible compares them after paste-back, over the mask and "
        "the band the paste-back blends (what reaches the output); the fronts are read on it.\n\n"
    )
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in report["methods"]:
        lines.append("| " + " | ".join(cell(row, key) for _, key in COLUMNS) + " |")
    lines += stage_lines(report["methods"])
    lines += step_reuse_lines(report["methods"])
    notes = [f"- `{row['method']}` ({row['status']}): {row['note']}" for row in report["methods"] if row.get("note")]
    tail = ("\n\nNotes:\n" + "\n".join(notes)) if notes else ""
    return head + "\n".join(lines) + tail + "\n"


def plot_png(report: dict, sweep: bool = False) -> bytes:
    """Visible-region PSNR against measured FLOPs cut and against DiT speedup, one line per method family.

    A line joins the family's Pareto front (its presets or sweep points); every point is drawn.
    Without a sweep, a left panel shows each method's measured FLOPs per step.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["methods"]
    panels = 2 if sweep else 3
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.8))
    if not sweep:
        _steps_panel(axes[0], rows)
    for ax, (key, label) in zip(axes[-2:], (("flops_cut", "measured FLOPs cut vs uncached"),
                                            ("transformer_speedup", "DiT speedup vs uncached"))):  # fmt: skip
        for i, (family, front) in enumerate(sorted(fronts(rows, key).items())):
            color = f"C{i % 10}"
            points = [r for r in rows if r["family"] == family and r.get("status") in ("ok", "broken")]
            ax.scatter([r[key] for r in points if r.get(key)], [psnr_visible(r) for r in points if r.get(key)],
                       color=color, alpha=0.35, s=18)  # fmt: skip
            broken = " (broken on VACE)" if any(r["status"] == "broken" for r in front) else ""
            ax.plot([r[key] for r in front], [psnr_visible(r) for r in front], "o-", color=color,
                    label=family + broken)  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("PSNR visible (mask + paste band) vs uncached (dB)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no cached run with an effect to plot", ha="center", va="center", transform=ax.transAxes)
    axes[-2].set_title("quality against work (Pareto front per method)")
    axes[-1].set_title("quality against transformer speed")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _steps_panel(ax, rows: list[dict]) -> None:
    """Measured FLOPs of each method's forwards (bar height), coloured by decision (F / P / R)."""
    shown = [r for r in rows if r.get("forwards")]
    peak = max((max(r["forwards"]) for r in shown), default=1.0) or 1.0
    for i, row in enumerate(shown):
        letters = row.get("measured_schedule") or ""
        per_step = len(row["forwards"]) // max(len(letters), 1) or 1
        for step, letter in enumerate(letters):
            flops = row["forwards"][step * per_step]
            ax.bar(step, max(0.08, 0.8 * flops / peak), bottom=i, color=_COLORS[letter], width=0.9)
    ax.set_yticks([i + 0.4 for i in range(len(shown))], [r["method"] for r in shown], fontsize=7)
    ax.set_xlabel("denoising step (bar height: measured FLOPs of its forward)")
    ax.set_title("work per step: full (red), partial (orange), skipped (green)")


def write_reports(report: dict, out_dir: Path, sweep: bool = False) -> dict[str, Path]:
    paths = {"markdown": out_dir / "bench.md", "json": out_dir / "bench.json", "plot": out_dir / "bench.png"}
    atomic_write_text(paths["markdown"], markdown(report))
    atomic_write_text(paths["json"], json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_bytes(paths["plot"], plot_png(report, sweep))
    return paths
