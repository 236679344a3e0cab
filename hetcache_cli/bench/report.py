"""Bench reports: a Markdown table, a JSON file and a PNG plot."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hetcache_cli.io.atomic import atomic_write_bytes, atomic_write_text

COLUMNS = (
    ("method", "method"),
    ("schedule", "schedule"),
    ("wall s", "wall_s"),
    ("speedup", "speedup"),
    ("DiT speedup", "transformer_speedup"),
    ("FLOPs cut", "flops_cut"),
    ("efficiency", "efficiency"),
    ("peak MiB", "peak_memory_bytes"),
    ("cache MiB", "cache_memory_bytes"),
    ("F/P/R", "decisions"),
    ("PSNR in", ("psnr", "inside")),
    ("PSNR margin", ("psnr", "margin")),
    ("PSNR bg", ("psnr", "background")),
    ("SSIM in", ("ssim", "inside")),
    ("SSIM margin", ("ssim", "margin")),
    ("SSIM bg", ("ssim", "background")),
    ("warp err", ("temporal", "pred", "all")),
)


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
        value = row["quality"]
        for part in key:
            value = None if value is None else value.get(part)
        return _fmt(key[0], value)
    return _fmt(key, row[key])


def markdown(report: dict) -> str:
    head = (
        f"# hetcache bench\n\n{report['frames']} frames {report['width']}x{report['height']}, "
        f"{report['steps']} steps, model {report['model']} on {report['device']} ({report['dtype']}), "
        f"median of {report['repeat']} run(s). Speedups and quality are against the uncached run (`none`) "
        "of the same process; DiT speedup counts the transformer only, efficiency = DiT speedup / FLOPs cut; "
        "quality compares model outputs before paste-back (PSNR dB, SSIM), split inside the mask, the margin "
        "band and the background.\n\n"
    )
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in report["methods"]:
        lines.append("| " + " | ".join(cell(row, key) for _, key in COLUMNS) + " |")
    return head + "\n".join(lines) + "\n"


def plot_png(report: dict) -> bytes:
    """Per-step decisions and FLOPs of each method (left); quality against speedup (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["methods"]
    fig, (ax_steps, ax_q) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"full": "#c0392b", "partial": "#f39c12", "reuse": "#27ae60"}
    for i, row in enumerate(rows):
        records = [r for r in report["steps_detail"][row["method"]] if r["branch"] == "cond"]
        peak = max((r["flops"] for r in records), default=1.0) or 1.0
        for r in records:
            height = max(0.08, 0.8 * r["flops"] / peak)  # reuse steps (0 FLOPs) stay visible
            ax_steps.bar(r["step"], height, bottom=i, color=colors[r["decision"]], width=0.9)
    ax_steps.set_yticks([i + 0.4 for i in range(len(rows))], [r["method"] for r in rows])
    ax_steps.set_xlabel("denoising step (bar height: FLOPs of the step)")
    ax_steps.set_title("decisions: full (red), partial (orange), reuse (green)")
    for row in rows:
        psnr = (row["quality"] or {}).get("psnr", {}).get("inside")
        speed = row["transformer_speedup"] or row["speedup"]
        if psnr is None:
            continue
        ax_q.scatter(speed, psnr)
        ax_q.annotate(row["method"], (speed, psnr), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax_q.set_xlabel("transformer speedup vs uncached")
    ax_q.set_ylabel("PSNR inside the mask vs uncached (dB, capped at 100)")
    ax_q.set_title("quality against speed")
    ax_q.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_reports(report: dict, out_dir: Path) -> dict[str, Path]:
    paths = {"markdown": out_dir / "bench.md", "json": out_dir / "bench.json", "plot": out_dir / "bench.png"}
    atomic_write_text(paths["markdown"], markdown(report))
    atomic_write_text(paths["json"], json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_bytes(paths["plot"], plot_png(report))
    return paths
