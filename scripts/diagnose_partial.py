"""Why PARTIAL steps did (not) earn their FLOPs: per-step errors against the uncached run, by cause.

    nice -n 10 python scripts/diagnose_partial.py                      # photo-pan-large, guidance 5
    python scripts/diagnose_partial.py --clip photo-zoom-moving --guidance 5 --steps-table new

Every cached forward is shadowed by the exact forward on the same input (the local error of
that step's decision; `hetcache_cli/bench/diagnose.py`). Prints, for each variant of the
engine or the settings that tests one candidate cause:
- the final quality (PSNR before paste-back against the uncached run, by region) and FLOPs cut;
- the mean local error of the guidance-combined noise prediction per token group on the
  PARTIAL and the REUSE steps (relative RMS: error / RMS of the exact prediction);
and the per-step table of the chosen variants (`--steps-table`): decision, error per group,
each branch's own error, whether the branches computed the same tokens, drift of the step's
input latents from the uncached trajectory.

Variants: the engine before issue 19 (each guidance branch chose its own context tokens, no
forecast, the old balanced preset) and each fix added in turn; then on today's balanced
preset one change at a time: no forecast, the residual forecast without the K/V forecast,
slopes also taken from PARTIAL rows, no margin or context tokens, uniform context selection,
PARTIAL/FULL placed by the modulation's curvature instead of its change, an oracle whose
PARTIAL steps see this step's exact K/V of every token (residual forecast only: what the stale
K/V cost), and the step-only references (teacache with the same FULL threshold, with and
without the residual forecast).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

OLD_BALANCED = dict(reuse_threshold=0.05, full_threshold=0.3, warmup_steps=2, max_partial_run=4,
                    margin_ratio=1.0, context_ratio=0.1)


@contextlib.contextmanager
def slopes_from_partial_rows():
    """The forecast variant that also measures slopes on the rows a PARTIAL step recomputes."""
    from hetcache_cli.cache import engine

    original = engine.forward_partial

    def forward_partial(module, inputs, rope, state, use_triton=None, timestep=None):
        fc = state.forecast
        rows = state.active[0]
        old, t_old, seen = state.residual[:, rows].clone(), fc.t_last[rows].clone(), fc.seen[rows].clone()
        out = original(module, inputs, rope, state, use_triton, timestep)
        gap = timestep / 1000.0 - t_old
        inv = (1.0 / gap).where(seen & (gap.abs() > 1e-9), gap.new_zeros(()))
        fc.slope[:, rows] = ((state.residual[:, rows] - old) * inv[None, :, None]).to(fc.slope.dtype)
        return out

    engine.forward_partial = forward_partial
    try:
        yield
    finally:
        engine.forward_partial = original


@contextlib.contextmanager
def fresh_context_kv():
    """Oracle: before each PARTIAL step, every layer's K/V cache is refreshed with this step's exact values.

    A diagnostic only (it costs a FULL step): the active rows then attend to current K/V instead of
    those of the last FULL step, which isolates what the stale K/V of the inactive tokens cost.
    """
    from hetcache_cli.cache import engine
    from hetcache_cli.cache.blocks import run_stack

    original = engine.forward_partial

    def forward_partial(module, inputs, rope, state, use_triton=None, timestep=None):
        emb = engine.embed(module, inputs, text_kv=state.text)
        control = engine.embed_control(module, inputs, emb.x.size(1))
        run_stack(module, emb.x, control, emb.text, emb.tproj, rope, emb.scales, state.kv, None, use_triton=use_triton)
        return original(module, inputs, rope, state, use_triton, timestep)

    engine.forward_partial = forward_partial
    try:
        yield
    finally:
        engine.forward_partial = original


def curvature_schedule(pipe, steps: int, config) -> str:
    """The decision rule on the modulation's relative second difference instead of its change."""
    import torch

    from hetcache_cli.cache.schedule import decide, normalise_signal, schedule_letters

    pipe.scheduler.set_timesteps(steps)
    ts = pipe.scheduler.timesteps
    e = pipe.transformer.condition_embedder
    with torch.no_grad():
        proj = e.time_proj(e.act_fn(e.time_embedder(e.timesteps_proj(ts.float())))).float()  # [S, 6D]
    t = ts.float() / 1000.0
    slope = (proj[1:] - proj[:-1]) / (t[1:] - t[:-1])[:, None]
    d2 = ((slope[1:] - slope[:-1]) * (t[2:] - t[1:-1])[:, None]).abs().mean(-1) / proj[1:-1].abs().mean(-1)
    signal = normalise_signal([0.0, float(d2[0])] + d2.tolist())
    return schedule_letters(decide(signal, config))


def variants(pipe, steps: int):
    from hetcache_cli.cache import HetCacheConfig, build_config

    balanced = build_config(preset="balanced").to_dict()
    balanced.pop("preset")

    def het(**kw):
        return HetCacheConfig(**{**balanced, **kw})

    full_t = balanced["full_threshold"]
    tea = dict(method="teacache", reuse_threshold=full_t, full_threshold=full_t, warmup_steps=1, max_partial_run=100)
    return [
        ("old", "before: old balanced, per-branch context, no forecast",
         HetCacheConfig(**OLD_BALANCED, forecast="none"), dict(per_branch=True)),
        ("old+shared", "old balanced + one active set for both branches", HetCacheConfig(**OLD_BALANCED, forecast="none"), {}),
        ("old+shared+forecast", "old balanced + shared set + residual forecast",
         HetCacheConfig(**OLD_BALANCED, forecast="residual"), {}),
        ("old+shared+kv", "old balanced + shared set + residual and K/V forecast",
         HetCacheConfig(**OLD_BALANCED, forecast="linear"), {}),
        ("new-noforecast", "balanced, no forecast", het(forecast="none"), {}),
        ("new-residual", "balanced, residual forecast only (stale K/V on PARTIAL steps)", het(forecast="residual"), {}),
        ("new-partialslopes", "balanced, slopes also from PARTIAL rows", het(), dict(partial_slopes=True)),
        ("new", "balanced (today's engine and preset)", het(), {}),
        ("new-freshkv", "balanced, residual forecast, oracle: exact K/V of all tokens on PARTIAL steps",
         het(forecast="residual"), dict(fresh_kv=True)),
        ("new-genonly", "balanced, no margin or context tokens", het(margin_ratio=0.0, context_ratio=0.0), {}),
        ("new-uniform", "balanced, uniform context selection", het(selection="uniform"), {}),
        ("new-curvature", "balanced, schedule from the modulation's curvature",
         het(schedule=curvature_schedule(pipe, steps, het())), {}),
        ("teacache", f"teacache T={full_t:g} (same FULL threshold, no PARTIAL)", HetCacheConfig(**tea, forecast="none"), {}),
        ("teacache+forecast", f"teacache T={full_t:g} + forecast", HetCacheConfig(**tea, forecast="residual"), {}),
    ]


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="photo-pan-large")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma list of variant keys (default: all)")
    parser.add_argument("--steps-table", default="old,new", help="variants whose per-step table is printed")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from hetcache_cli.bench.clips import suite_clips
    from hetcache_cli.bench.diagnose import GROUPS, ShadowRecorder, by_decision, step_rows
    from hetcache_cli.bench.runner import ClipRunner, shared_conditioning
    from hetcache_cli.cache import HetCacheConfig
    from hetcache_cli.pipeline.model import load_pipeline, resolve_device, resolve_model

    torch.set_num_threads(args.threads)
    clips = {c.name: c for c in suite_clips()}
    if args.clip not in clips:
        print(f"error: unknown clip {args.clip!r}; choose from {', '.join(clips)}", file=sys.stderr)
        return 2
    pipe = load_pipeline(resolve_model(None), resolve_device("cpu"), torch.float32)
    runner = ClipRunner(pipe, clips[args.clip], steps=args.steps)
    chosen = variants(pipe, args.steps)
    if args.only:
        keep = set(args.only.split(","))
        chosen = [v for v in chosen if v[0] in keep]
    results = []
    with shared_conditioning(pipe):
        ref_rec = ShadowRecorder()
        reference = runner.run(HetCacheConfig(method="none"), args.guidance, ref_rec)
        for key, label, config, opts in chosen:
            print(f"running {key} ...", file=sys.stderr, flush=True)
            recorder = ShadowRecorder(per_branch_selection=opts.get("per_branch", False))
            patch = (slopes_from_partial_rows() if opts.get("partial_slopes")
                     else fresh_context_kv() if opts.get("fresh_kv") else contextlib.nullcontext())
            with patch:
                result = runner.run(config, args.guidance, recorder)
            rows = step_rows(recorder.records, args.guidance, ref_rec.records, recorder.patch)
            recorder.records.clear()
            results.append((key, label, result, rows))
        runner.decode([reference] + [r for _, _, r, _ in results])

    print(f"# PARTIAL diagnosis: {args.clip}, guidance {args.guidance:g}, {args.steps} steps\n")
    print("Local error = RMS(cached - exact) / RMS(exact) of the guidance-combined noise prediction, on the same "
          "input; mean over the steps of each kind. PSNR before paste-back against the uncached run.\n")
    head = ["variant", "schedule", "cut", "PSNR in", "PSNR margin", "PSNR bg"]
    head += [f"P: {g}" for g in GROUPS] + [f"R: {g}" for g in ("generative", "context cached")]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key, label, result, rows in results:
        q = runner.score(result, reference)
        agg = by_decision(rows)
        p, r = agg.get("partial", {}), agg.get("reuse", {})
        cells = [f"{key}: {label}", f"`{result.summary['schedule']}`", f"{result.flops_cut:.2f}",
                 f"{q['inside']:.1f}", f"{q['margin']:.1f}", f"{q['background']:.1f}"]
        cells += [_fmt(p.get(g)) for g in GROUPS] + [_fmt(r.get(g)) for g in ("generative", "context cached")]
        print("| " + " | ".join(cells) + " |")
    for key, label, result, rows in results:
        if key not in args.steps_table.split(","):
            continue
        print(f"\n## per step: {key} ({label})\n")
        cols = []
        for row in rows:
            cols += [c for c in row if c not in cols and c not in ("step", "decision")]
        print("| step | decision | " + " | ".join(cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for row in rows:
            print(f"| {row['step']} | {row['decision'][0].upper()} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
