"""A picture of what the cache did in one edit, drawn from its statistics JSON.

Four panels: the step timeline per window and guidance branch (full / partial / reuse coloured, the
switch between the experts of a two-expert model marked), the tokens computed per class on every
step, the FLOPs of every step against the uncached run's, and the wall time of every window.
matplotlib is imported here only; `missing_matplotlib()` says how to install it without importing it.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path

__all__ = ["DECISION_COLORS", "class_tokens", "missing_matplotlib", "plot_png", "write_cache_plot"]

DECISION_COLORS = {"full": "#c0392b", "partial": "#f39c12", "reuse": "#27ae60"}  # as in the bench plot
CLASS_COLORS = {"generative": "#8e44ad", "margin": "#2980b9", "context": "#95a5a6"}
INSTALL_HINT = "pip install matplotlib"


def missing_matplotlib() -> str | None:
    """A one-line message when matplotlib is not installed (checked without importing it), else None."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return f"the cache plot needs matplotlib, which is not installed; install it with `{INSTALL_HINT}`"
    return None


def _subset(ratio: float, total: int) -> int:
    return min(total, int(math.floor(ratio * total + 0.5)))  # as cache/tokens.py's subset_count


def class_tokens(record: dict, cache: dict) -> tuple[int, int, int]:
    """(generative, margin, context) tokens a step record computed.

    A full step computes every token; a reuse step none; a partial step the generative tokens, the
    margin subset (cache margin_ratio) and the context pick (the rest of its count).
    """
    t = record["tokens"]
    g, m, c = (t.get(k) or 0 for k in ("generative", "margin", "context"))
    computed = t["computed"]
    if record["decision"] == "full" or computed >= g + m + c:
        return g, m, c
    if computed == 0:
        return 0, 0, 0
    gen = min(g, computed)
    margin = min(m, computed - gen, _subset(float(cache.get("margin_ratio", 1.0)), m))
    return gen, margin, computed - gen - margin


def _runs(records: list[dict]) -> tuple[list[tuple[int, str]], dict]:
    """Rows (window, branch) in order, and per (window, step) the records of its branches."""
    rows: dict[tuple[int, str], None] = {}
    by_step: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for r in records:
        w = int(r.get("window", 0))
        rows[(w, r["branch"])] = None
        by_step[(w, int(r["step"]))].append(r)
    return list(rows), by_step


def _timeline(ax, records: list[dict], rows: list[tuple[int, str]], windowed: bool) -> None:
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    index = {row: i for i, row in enumerate(rows)}
    spans: dict[tuple[int, str], list] = defaultdict(list)
    for r in records:
        spans[(index[(int(r.get("window", 0)), r["branch"])], r["decision"])].append((int(r["step"]) - 0.5, 1))
    for (i, decision), cells in spans.items():
        ax.broken_barh(cells, (i - 0.4, 0.8), facecolors=DECISION_COLORS[decision])
    first_expert = records[0].get("expert", "transformer")
    switches = sorted({int(r["step"]) for r in records if r.get("expert", "transformer") != first_expert})
    if switches:
        ax.axvline(switches[0] - 0.5, color="black", linestyle="--", linewidth=1)
        ax.text(switches[0] - 0.5, len(rows) - 0.4, f" {records[-1].get('expert')} from step {switches[0]}", fontsize=7,
                va="bottom")  # fmt: skip
    labels = [f"w{w} {b}" if windowed else b for w, b in rows]
    every = max(1, len(rows) // 24)
    ax.set_yticks(range(0, len(rows), every), labels[::every], fontsize=7)
    ax.set_ylim(len(rows) - 0.5 + (0.6 if switches else 0), -0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("denoising step")
    ax.set_title("steps per window and branch: full / partial / reuse")
    ax.legend(handles=[Patch(color=c, label=d) for d, c in DECISION_COLORS.items()], fontsize=7, loc="lower right")


def _x_axis(ax, keys: list[tuple[int, int]], windowed: bool) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if windowed:
        for x in range(1, len(keys)):
            if keys[x][0] != keys[x - 1][0]:
                ax.axvline(x - 0.5, color="black", linewidth=0.5, alpha=0.4)
        ax.set_xlabel("step, windows one after another (thin lines: window starts)")
    else:
        ax.set_xlabel("denoising step")


def _tokens(ax, keys, by_step, cache: dict, windowed: bool) -> None:
    bottoms = [0.0] * len(keys)
    for k, name in enumerate(CLASS_COLORS):
        heights = []
        for key in keys:
            recs = by_step[key]
            heights.append(sum(class_tokens(r, cache)[k] for r in recs) / len(recs))
        ax.bar(range(len(keys)), heights, bottom=bottoms, width=1.0, linewidth=0, color=CLASS_COLORS[name], label=name)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    _x_axis(ax, keys, windowed)
    ax.set_ylabel("tokens computed (mean over branches)")
    ax.set_title("tokens computed per class")
    ax.legend(fontsize=7, loc="upper right")


def _flops(ax, keys, by_step, windowed: bool) -> None:
    cached = [sum(r["flops"] for r in by_step[k]) for k in keys]
    full = [sum(r.get("flops_full") or r["flops"] for r in by_step[k]) for k in keys]
    scale, unit = (1e12, "TFLOPs") if max(full, default=0) >= 1e12 else (1e9, "GFLOPs")
    colors = [DECISION_COLORS[by_step[k][0]["decision"]] for k in keys]
    ax.bar(range(len(keys)), [v / scale for v in cached], width=1.0, linewidth=0, color=colors, label="this run")
    edges = [x - 0.5 for x in range(len(keys) + 1)]
    ax.stairs([v / scale for v in full], edges, color="black", linewidth=1, label="uncached")
    _x_axis(ax, keys, windowed)
    ax.set_ylabel(f"{unit} per step (all branches)")
    ratio = sum(cached) / sum(full) if sum(full) else 1.0
    ax.set_title(f"FLOPs per step: {ratio:.0%} of the uncached run")
    ax.legend(fontsize=7, loc="lower right")


def _wall(ax, windows: list[dict]) -> None:
    xs = range(len(windows))
    dit = [(w.get("transformer_ms") or 0.0) / 1e3 for w in windows]
    rest = [max(0.0, (w.get("wall_s") or 0.0) - d) for w, d in zip(windows, dit)]
    ax.bar(xs, dit, color="#34495e", label="transformer")
    ax.bar(xs, rest, bottom=dit, color="#bdc3c7", label="rest (text, VAE, scheduler)")
    for x, w in zip(xs, windows):
        if w.get("resumed"):
            ax.text(x, (w.get("wall_s") or 0.0), "resumed", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(list(xs), [str(w.get("index", i)) for i, w in enumerate(windows)], fontsize=7)
    ax.set_xlabel("window")
    ax.set_ylabel("seconds")
    ax.set_title(f"wall time per window ({sum((w.get('wall_s') or 0.0) for w in windows):.1f} s in all)")
    ax.legend(fontsize=7)


def _title(stats: dict) -> str:
    s, summary = stats.get("settings", {}), stats.get("summary", {})
    parts = []
    if "frames" in s:
        parts.append(f"{s['frames']} frames {s.get('width')}x{s.get('height')}")
    if "steps" in s:
        parts.append(f"{s['steps']} steps")
    parts.append(f"cache {s.get('cache', {}).get('method', '?')}")
    if "flops_ratio" in summary:
        parts.append(f"{summary['flops_ratio']:.0%} of uncached FLOPs")
    experts = summary.get("experts") or {}
    if len(experts) > 1:
        parts.append(" / ".join(f"{name} {e['schedule']}" for name, e in experts.items()))
    elif summary.get("schedule"):
        parts.append(f"schedule {summary['schedule']}")
    return ", ".join(parts)


def plot_png(stats: dict) -> bytes:
    """PNG bytes of the four panels for an edit's statistics (the dict `hetcache edit` writes as .stats.json)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    records = stats.get("steps") or []
    if not records:
        raise ValueError("the statistics hold no step records")
    windows = stats.get("windows") or [{"index": 0, **stats.get("summary", {})}]
    cache = stats.get("settings", {}).get("cache", {})
    rows, by_step = _runs(records)
    keys = sorted(by_step)
    windowed = len({w for w, _ in keys}) > 1

    fig = Figure(figsize=(13, 8.5))
    axes = fig.subplots(2, 2)
    _timeline(axes[0][0], records, rows, windowed)
    _tokens(axes[0][1], keys, by_step, cache, windowed)
    _flops(axes[1][0], keys, by_step, windowed)
    _wall(axes[1][1], windows)
    for ax in (axes[0][1], axes[1][0], axes[1][1]):
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(_title(stats), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def write_cache_plot(path: str | Path, stats: dict) -> Path:
    """Draw `stats` into the PNG `path`, atomically."""
    from hetcache_cli.io.atomic import atomic_write_bytes

    return atomic_write_bytes(Path(path), plot_png(stats))
