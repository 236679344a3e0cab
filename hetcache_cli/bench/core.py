"""Speed, work and quality of cache methods on one edit, against the uncached run in the same process.

Every method, ours and the peers (`bench/peers.py`), runs the same edit on the same loaded pipeline
(same inputs, seed and settings). Per method:
- one counted run: FLOPs instrumented (`bench/flops_counter.py`: every linear layer, patch
  embedding and attention call of the transformer that actually ran), and its output, compared
  with the uncached output by region (before paste-back, so the background is judged too);
- `repeat` timed runs, uninstrumented, interleaved across methods so that a load spike hits
  every method alike; medians reported. DiT time is the transformer's own (HetCache's hook times
  every transformer forward, a peer's included, since it wraps the peer's forward).
Warm-up first (excluded): on CUDA one run per method (compiling the Triton kernels), on CPU one
short uncached run.

A peer that is not installed, raises, or changes nothing (output identical to uncached and no work
skipped) becomes a row that says so. Each peer is also checked on identical inputs (`vace_check`):
a peer that changes the output when it skips is marked broken, with the evidence. After every peer
run the pipeline is put back exactly as it was (`peer_state`); what the peer itself left is noted.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hetcache_cli.bench.methods import DEFAULT_METHODS, Method, parse_methods, variant  # noqa: F401
from hetcache_cli.bench.results import judge
from hetcache_cli.bench.runs import Runner
from hetcache_cli.pipeline.edit import EditPlan

logger = logging.getLogger(__name__)


def run_bench(prep: EditPlan, pipe, model_info: dict, methods: list[Method], repeat: int, out_dir: Path,
              warmup: bool = True, progress=None) -> dict:
    """Run every method once counted and `repeat` times timed (after a warm-up); compare each with uncached."""
    runner = Runner(prep, pipe, model_info, progress)
    results = [runner.result(m, variant(prep, m, out_dir, prep.spec.model)) for m in methods]
    base = results[0]
    if base.method.method != "none":
        raise ValueError("the first method must be the uncached run (none)")
    for res in results:
        if res.peer is not None and res.runnable:
            runner.check_hints(res)
    if warmup:
        runner.warmup(results)
    for res in results:
        runner.run(res, counted=True)
        if res is base and not res.runnable:
            raise RuntimeError(f"the uncached run failed: {'; '.join(res.notes)}")
    for r in range(repeat):
        for res in results:
            runner.run(res, counted=False, label=f"{res.label} ({r + 1}/{repeat})")
    for res in results:
        judge(res, base)
    for res in results:
        res.raw = None
    branches = 2 if prep.spec.guidance_scale > 1.0 else 1
    return {
        "video": prep.spec.video,
        "mask": prep.spec.mask,
        "prompt": prep.spec.prompt,
        "model": model_info["name"],
        "device": model_info["device"],
        "dtype": model_info["dtype"],
        "frames": prep.plan.frames,
        "height": prep.plan.src_height,
        "width": prep.plan.src_width,
        "crops": [c.to_dict() for c in prep.crops],
        "steps": prep.spec.steps,
        "guidance_scale": prep.spec.guidance_scale,
        "repeat": repeat,
        "methods": [res.row(base, branches) for res in results],
        "steps_detail": {res.label: res.stats["steps"] for res in results if res.stats is not None},
    }
