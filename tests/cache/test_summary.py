"""RunSummary (cache/summary.py): records, plans and windows added up in one place; pure, no model."""

import math
from dataclasses import replace

from hetcache_cli.cache.flops import ModelDims
from hetcache_cli.cache.plan import CachePlan, ExpertPlan, StepPlan, TokenPlan
from hetcache_cli.cache.stats import StepStats, TokenCounts
from hetcache_cli.cache.summary import SCHEMA_VERSION, RunSummary

DIMS = ModelDims(dim=64, ffn_dim=128, num_layers=4, num_vace_layers=2, num_heads=4, text_len=16)
# flops that do not add up exactly in float in every order: fsum makes the totals order-free
FLOPS = {"full": 0.1, "partial": 0.7, "reuse": 0.0}


def plan(schedule="FPRF", experts=("transformer",) * 4, branches=2) -> CachePlan:
    letters = {"F": "full", "P": "partial", "R": "reuse"}
    steps = tuple(StepPlan(i, 999.0 - i, e, letters[c], {"F": 48, "P": 12, "R": 0}[c], FLOPS[letters[c]], 0.1)
                  for i, (c, e) in enumerate(zip(schedule, experts)))
    names = tuple(dict.fromkeys(experts))
    memory = {"cache": 1000, "text": 10, "total": 1010, "device": 1010, "host": 0}
    return CachePlan("hetcache", branches, TokenPlan(48, 12, 4, 8, 36), steps,
                     tuple(ExpertPlan(n, tuple(i for i, e in enumerate(experts) if e == n), DIMS, None, memory)
                           for n in names))


def run(p: CachePlan) -> StepStats:
    """The records a run of `p` leaves: one per step and branch, in run order."""
    stats = StepStats()
    stats.begin(p)
    for s in p.steps:
        for branch in ("cond", "uncond")[: p.branches]:
            stats.record(("cpu", 0.0), s.step, s.timestep, branch, s.decision,
                         TokenCounts(48, s.computed, 4, 8, 36), s.flops, expert=s.expert, flops_full=s.flops_full)
    return stats


def test_a_run_adds_up_to_its_plan_exactly():
    p = plan("FPPRPF", ("transformer",) * 3 + ("transformer_2",) * 3)
    ran, planned = run(p).run_summary(), RunSummary.from_plan(p)
    assert ran.flops == planned.flops == math.fsum([0.1, 0.7, 0.7, 0.0, 0.7, 0.1] * 2)
    assert (ran.schedule, dict(ran.decisions), ran.tokens) == ("FPPRPF", {"full": 4, "partial": 6, "reuse": 2}, 48)
    assert (planned.schedule, dict(planned.decisions), planned.tokens) == (ran.schedule, dict(ran.decisions), 48)
    assert {n: e.schedule for n, e in ran.experts.items()} == {"transformer": "FPP", "transformer_2": "RPF"}
    assert {n: replace(e, transformer_ms=0.0) for n, e in ran.experts.items()} == dict(planned.experts)
    assert ran.cache_memory_bytes == planned.cache_memory_bytes == 1000


def test_windows_combine_and_survive_the_json():
    first, second = run(plan("FPRF")).run_summary(), run(plan("FRRF")).run_summary()
    back = [RunSummary.from_dict(s.to_dict()) for s in (first, second)]
    assert back == [first, second]
    edit = RunSummary.combine(back)
    assert (edit.windows, edit.schedule, edit.tokens) == (2, "FPRF|FRRF", 96)
    assert edit.flops == math.fsum([first.flops, second.flops]) and edit.flops_ratio == edit.flops / edit.flops_full
    assert dict(edit.decisions) == {"full": 8, "partial": 2, "reuse": 6}
    assert edit.experts["transformer"].schedule == "FPRF|FRRF"
    same = RunSummary.combine([first, first])
    assert same.schedule == "FPRF"
    doc = edit.to_dict(edit=True)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["windows"] == 2 and doc["resumed_windows"] == 0
