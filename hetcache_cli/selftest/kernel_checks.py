"""`hetcache selftest`, the kernel checks: every kernel against its torch reference.

Odd shapes, M = 0 and M = N, float32 everywhere (and float16, bfloat16 and one Wan-sized
shape on CUDA), with the tolerances of docs/kernels.md. The kernels are looked up on the
`hetcache_cli.kernels` module at call time, so a patched kernel is what gets checked.
"""

from __future__ import annotations

import math

import torch

from hetcache_cli import kernels
from hetcache_cli.kernels import reference

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
BUG = "report a bug with the output of `hetcache selftest --json`"


ROW_SHAPES = [(2, 37, 24, 11), (1, 63, 40, 63), (2, 37, 40, 0), (2, 63, 600, 37)]  # (B, N, D, M)
ATTN_SHAPES = [(2, 3, 20, 63, 24), (1, 2, 1, 37, 40), (2, 1, 33, 17, 16)]  # (B, H, G, N, d)
# CUDA adds one engine-sized case each: Wan-1.3B widths, 30% of the tokens active
CUDA_SHAPES = {"rows": (1, 4099, 1536, 1229), "attention": (1, 12, 409, 2053, 128)}
# docs/kernels.md, "Tolerances": copies are exact, blends about one ulp of the dtype
BLEND_TOL = {
    torch.float32: dict(rtol=1.3e-6, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5),
}
MASS_TOL = dict(rtol=1e-4, atol=1e-5)


def _randn(device, dtype, *shape, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).to(device=device, dtype=dtype)


def _index(device, B: int, M: int, N: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(N, generator=g)[:M] for _ in range(B)])  # [B, M] distinct rows
    return idx.to(device=device, dtype=torch.int32 if (B + M) % 2 else torch.int64)


def _gather(shape, dtype, dev, use_triton):
    B, N, D, M = shape
    x, idx = _randn(dev, dtype, B, N, D), _index(dev, B, M, N)
    return kernels.gather_tokens(x, idx, use_triton=use_triton), reference.gather_tokens_ref(x, idx), None


def _scatter(shape, dtype, dev, use_triton):
    B, N, D, M = shape
    dst, idx, src = _randn(dev, dtype, B, N, D), _index(dev, B, M, N), _randn(dev, dtype, B, M, D, seed=2)
    expected = reference.scatter_tokens_ref(dst, idx, src)
    return kernels.scatter_tokens_(dst, idx, src, use_triton=use_triton), expected, None


def _blend(shape, dtype, dev, use_triton):
    B, N, D, M = shape
    dst, idx, src = _randn(dev, dtype, B, N, D), _index(dev, B, M, N), _randn(dev, dtype, B, M, D, seed=2)
    alpha = 0.3 if B == 1 else torch.rand(B, M, generator=torch.Generator().manual_seed(3)).to(dev)  # per row
    expected = reference.scatter_tokens_ref(dst, idx, src, alpha)
    return kernels.scatter_tokens_(dst, idx, src, alpha, use_triton=use_triton), expected, BLEND_TOL[dtype]


def _merge(shape, dtype, dev, use_triton):
    B, N, D, M = shape
    base, residual = _randn(dev, dtype, B, N, D), _randn(dev, dtype, B, N, D, seed=2)
    idx, active = _index(dev, B, M, N), _randn(dev, dtype, B, M, D, seed=3)
    slot = kernels.build_slot_map(idx, N) if B > 1 else None
    out = kernels.merge_tokens(base, residual, idx, active, slot=slot, use_triton=use_triton)
    return out, reference.merge_tokens_ref(base, residual, idx, active), None


def _mass(shape, dtype, dev, use_triton):
    B, H, G, N, d = shape
    q, k = _randn(dev, dtype, B, H, G, d, scale=2.0), _randn(dev, dtype, B, H, N, d, seed=2)
    return kernels.attention_mass(q, k, use_triton=use_triton), reference.attention_mass_ref(q, k), MASS_TOL


# name in the report -> (case builder, shape family)
KERNEL_CASES = {
    "gather_tokens": (_gather, "rows"),
    "scatter_tokens_": (_scatter, "rows"),
    "scatter_tokens_ blend": (_blend, "rows"),
    "merge_tokens": (_merge, "rows"),
    "attention_mass": (_mass, "attention"),
}
_FAMILIES = {"rows": (ROW_SHAPES, "B={} N={} D={} M={}"), "attention": (ATTN_SHAPES, "B={} H={} G={} N={} d={}")}


def _compare(out: torch.Tensor, expected: torch.Tensor, tol: dict | None) -> tuple[bool, float]:
    """(ok, max abs error); tol None = bit-exact."""
    if out.shape != expected.shape or out.dtype != expected.dtype:
        return False, math.inf
    diff = (out.double() - expected.double()).abs()
    err = float(diff.max()) if diff.numel() else 0.0
    if tol is None:
        return torch.equal(out, expected), err
    bound = tol["atol"] + tol["rtol"] * expected.double().abs()
    return bool((diff <= bound).all()), err  # NaN fails


def _kernel_check(op: str, dev: torch.device, use_triton: bool, dtypes, cuda_case: bool) -> tuple:
    case, family = KERNEL_CASES[op]
    shapes, fmt = _FAMILIES[family]
    shapes = shapes + ([CUDA_SHAPES[family]] if cuda_case else [])
    what = f"Triton kernel {op}" if use_triton else f"torch path of {op}"
    if use_triton:
        fix = "update triton, or set `cache: {use_triton: false}` in the edit spec / " + BUG
    else:
        fix = "check the torch install / " + BUG
    worst = 0.0
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")
        for shape in shapes:
            where = f"on {dev.type} {name} at {fmt.format(*shape)}"
            try:
                out, expected, tol = case(shape, dtype, dev, use_triton)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                return FAIL, f"{what} raised {type(exc).__name__} {where}: {first}; {fix}"
            ok, err = _compare(out, expected, tol)
            if not ok:
                detail = f"{what} mismatches the torch reference {where} (max err {err:.3g}): {fix}"
                return FAIL, detail, {"max_err": err}
            worst = max(worst, err)
    names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
    exact = "exact" if worst == 0 else f"max err {worst:.3g}"
    mode = f" ({kernels.triton_mode()} Triton)" if use_triton else ""
    return PASS, f"{names} x {len(shapes)} shapes: {exact}{mode}", {"max_err": worst}


def kernel_checks(runner, dev: torch.device, quick: bool) -> None:
    on_cuda = dev.type == "cuda"
    dtypes = (torch.float32, torch.float16, torch.bfloat16) if on_cuda else (torch.float32,)
    mode = kernels.triton_mode()
    if not kernels.triton_available():
        triton_skip = kernels.triton_status().reason
    elif not on_cuda and mode != "interpreter":
        triton_skip = (
            "interpreter not enabled; skipped (set TRITON_INTERPRET=1 before the command to run the Triton "
            "kernels in the interpreter on the CPU)"
        )
    else:
        triton_skip = None
    for backend in ("torch", "triton"):
        if backend == "triton" and triton_skip is not None:
            runner.run("kernels (triton)", lambda: (SKIP, triton_skip), BUG)
            continue
        use_triton = backend == "triton"
        for op in KERNEL_CASES:
            runner.run(
                f"kernel {op} ({backend})",
                lambda op=op: _kernel_check(op, dev, use_triton, dtypes, on_cuda and (use_triton or not quick)),
                BUG,
            )
