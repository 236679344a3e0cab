"""Benchmark the token kernels against the torch ways of doing the same thing.

Row moves (gather, scatter, blend, merge) report achieved GB/s: the minimum bytes the op
must move (each row read once, written once; indices not counted) over the median time,
next to a plain device copy of the same number of bytes (the bandwidth roofline).
attention_mass reports its time next to one SDPA call over the same G x N.

    python scripts/bench_kernels.py                          # CUDA, Wan-1.3B sizes
    python scripts/bench_kernels.py --json out/kernels.json
    python scripts/bench_kernels.py --device cpu --small     # torch paths, a quick check

Triton rows run only on a CUDA device with compiled Triton; otherwise they are skipped.
Results go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from hetcache_cli.kernels import (
    attention_mass,
    build_slot_map,
    dispatch,
    gather_tokens,
    merge_tokens,
    scatter_tokens_,
)

# Wan2.1-VACE-1.3B: 33 and 81 frames at 480x832; D = 1536 = 12 heads x 128
FULL = dict(n_tokens=(14040, 32760), dim=1536, heads=12, head_dim=128)
SMALL = dict(n_tokens=(1170, 2340), dim=256, heads=2, head_dim=64)
ACTIVE_FRACTION = 0.3
QUERY_FRACTION = 0.2
SKIP_NOTE = "skipped: Triton rows need a CUDA device and compiled Triton"


@dataclass
class Row:
    op: str
    n_tokens: int
    method: str
    ms: float | None
    gbps: float | None
    note: str = ""


def timer(device: torch.device, repeats: int, warmup: int) -> Callable[[Callable[[], object]], float]:
    """Median milliseconds of fn() over `repeats` runs after `warmup` untimed runs."""

    def run(fn: Callable[[], object]) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return run


def copy_baseline(n_bytes: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two buffers whose copy_ reads and writes n_bytes in total."""
    n = max(1, n_bytes // (2 * torch.empty((), dtype=dtype).element_size()))
    return torch.empty(n, dtype=dtype, device=device), torch.randn(n, device=device).to(dtype)


def bench_rows(
    n: int, dim: int, heads: int, dtype: torch.dtype, device: torch.device, time_ms, triton_ok: bool
) -> list[Row]:
    m = int(round(ACTIVE_FRACTION * n))
    e = torch.empty((), dtype=dtype).element_size()
    x = torch.randn(1, n, dim, device=device).to(dtype)
    residual = torch.randn(1, n, dim, device=device).to(dtype)
    rows = torch.randn(1, m, dim, device=device).to(dtype)
    idx = torch.randperm(n, device=device)[:m].sort().values[None]  # [1, M] sorted int64, as the engine
    idx0, slot = idx[0], build_slot_map(idx, n)
    out = torch.empty_like(x)
    alpha = 0.5

    def adv_scatter():
        x[:, idx0] = rows

    def adv_blend():
        x[:, idx0] = alpha * x[:, idx0] + (1 - alpha) * rows

    def adv_merge():
        torch.add(x, residual, out=out)
        out[:, idx0] = rows

    cases: dict[str, tuple[int, dict[str, Callable[[], object]]]] = {
        "gather": (2 * m * dim * e, {
            "triton": lambda: gather_tokens(x, idx, use_triton=True),
            "torch path": lambda: gather_tokens(x, idx, use_triton=False),
            "index_select": lambda: x[0].index_select(0, idx0),
            "advanced indexing": lambda: x[:, idx0],
        }),
        "scatter": (2 * m * dim * e, {
            "triton": lambda: scatter_tokens_(x, idx, rows, use_triton=True),
            "torch path": lambda: scatter_tokens_(x, idx, rows, use_triton=False),
            "index_copy_": lambda: x[0].index_copy_(0, idx0, rows[0]),
            "advanced indexing": adv_scatter,
        }),
        "blend": (3 * m * dim * e, {
            "triton": lambda: scatter_tokens_(x, idx, rows, alpha, use_triton=True),
            "torch path": lambda: scatter_tokens_(x, idx, rows, alpha, use_triton=False),
            "advanced indexing": adv_blend,
        }),
        "merge": ((3 * n - m) * dim * e, {
            "triton (slot given)": lambda: merge_tokens(x, residual, idx, rows, slot=slot, out=out, use_triton=True),
            "triton (slot built)": lambda: merge_tokens(x, residual, idx, rows, out=out, use_triton=True),
            "torch path": lambda: merge_tokens(x, residual, idx, rows, out=out, use_triton=False),
            "advanced indexing": adv_merge,
        }),
    }
    results = []
    for op, (n_bytes, methods) in cases.items():
        dst_buf, src_buf = copy_baseline(n_bytes, dtype, device)
        methods = dict(methods, **{"device copy (same bytes)": lambda d=dst_buf, s=src_buf: d.copy_(s)})
        for method, fn in methods.items():
            if method.startswith("triton") and not triton_ok:
                results.append(Row(op, n, method, None, None, SKIP_NOTE))
                continue
            print(f"[bench] {op} N={n} {method}", file=sys.stderr)
            ms = time_ms(fn)
            results.append(Row(op, n, method, ms, n_bytes / (ms * 1e-3) / 1e9))
    return results


def bench_attention(
    n: int, heads: int, head_dim: int, dtype: torch.dtype, device: torch.device, time_ms, triton_ok: bool
) -> list[Row]:
    g = int(round(QUERY_FRACTION * n))
    q = torch.randn(1, heads, g, head_dim, device=device).to(dtype)
    k = torch.randn(1, heads, n, head_dim, device=device).to(dtype)
    v = torch.randn_like(k)
    methods = {
        "triton": lambda: attention_mass(q, k, use_triton=True),
        "torch path (chunk 1024)": lambda: attention_mass(q, k, use_triton=False),
        f"one SDPA call ({g} x {n})": lambda: F.scaled_dot_product_attention(q, k, v),
    }
    results, sdpa_ms = [], None
    for method, fn in reversed(methods.items()):  # SDPA first: the others are relative to it
        if method == "triton" and not triton_ok:
            results.append(Row("attention_mass", n, method, None, None, SKIP_NOTE))
            continue
        print(f"[bench] attention_mass N={n} {method}", file=sys.stderr)
        ms = time_ms(fn)
        sdpa_ms = sdpa_ms or ms
        results.append(Row("attention_mass", n, method, ms, None, f"{ms / sdpa_ms:.2f} x SDPA"))
    return results[::-1]


def print_table(rows: list[Row]) -> None:
    print(f"{'op':<15} {'N':>6}  {'method':<28} {'ms':>9} {'GB/s':>8}  note")
    for r in rows:
        ms = f"{r.ms:9.3f}" if r.ms is not None else f"{'-':>9}"
        gbps = f"{r.gbps:8.1f}" if r.gbps is not None else f"{'-':>8}"
        print(f"{r.op:<15} {r.n_tokens:>6}  {r.method:<28} {ms} {gbps}  {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="small sizes for a quick CPU check")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per case")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; use --device cpu --small", file=sys.stderr)
        return 2
    sizes = SMALL if args.small else FULL
    dtype = getattr(torch, args.dtype)
    repeats = args.repeats or (5 if device.type == "cpu" else 50)
    time_ms = timer(device, repeats, args.warmup)
    triton_ok = device.type == "cuda" and dispatch.triton_mode() == "native"

    torch.manual_seed(0)
    rows: list[Row] = []
    for n in sizes["n_tokens"]:
        rows += bench_rows(n, sizes["dim"], sizes["heads"], dtype, device, time_ms, triton_ok)
        rows += bench_attention(n, sizes["heads"], sizes["head_dim"], dtype, device, time_ms, triton_ok)
    print_table(rows)

    if args.json_path:
        meta = dict(
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            torch=torch.__version__, triton_mode=dispatch.triton_mode(), triton=dispatch.triton_status().version,
            dtype=args.dtype, batch=1, active_fraction=ACTIVE_FRACTION, query_fraction=QUERY_FRACTION,
            repeats=repeats, warmup=args.warmup, sizes=sizes,
        )
        with open(args.json_path, "w") as f:
            json.dump(dict(meta=meta, results=[asdict(r) for r in rows]), f, indent=2)
        print(f"[bench] wrote {args.json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
