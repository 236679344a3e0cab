"""HetCache under diffusers' group offloading and model CPU offload: every weight is onloaded before use.

On a CPU-only machine offloading moves nothing, so the tests make it observable: an offloaded
weight is replaced by NaNs until its hook onloads it again. A weight used while offloaded turns
the output into NaN; an output equal to the run without offloading proves every weight was
onloaded first. The uncached offloaded run checks the harness itself.
"""

import pytest
import torch
from diffusers.hooks import ModelHook

from hetcache_cli.cache import HetCacheConfig, StepStats, apply_hetcache, offload, remove_hetcache

from cache_helpers import eval_pipeline, run_pipe

SCHEDULE = "FPRPF"


class Poison:
    """Offloaded tensors read NaN; onloading restores them. Records every onload."""

    def __init__(self) -> None:
        self.stash: dict[int, torch.Tensor] = {}
        self.onloads: list = []  # the module (group leader or offloaded model) of every onload

    def hide(self, tensors) -> None:
        for t in tensors:
            if t.is_floating_point() and id(t) not in self.stash:
                self.stash[id(t)] = t.data
                t.data = torch.full_like(t.data, float("nan"))

    def show(self, tensors, module) -> None:
        self.onloads.append(module)
        for t in tensors:
            data = self.stash.pop(id(t), None)
            if data is not None:
                t.data = data

    def offloaded(self, module) -> bool:
        return all(id(p) in self.stash for p in module.parameters())


def group_tensors(group) -> list[torch.Tensor]:
    out = []
    for m in group.modules:
        out += list(m.parameters()) + list(m.buffers())
    return out + list(group.parameters) + list(group.buffers)


@pytest.fixture
def poison(monkeypatch):
    from accelerate.hooks import CpuOffload
    from diffusers.hooks.group_offloading import ModuleGroup

    p = Poison()
    monkeypatch.setattr(ModuleGroup, "offload_", lambda g: p.hide(group_tensors(g)))
    monkeypatch.setattr(ModuleGroup, "onload_", lambda g: p.show(group_tensors(g), g.offload_leader))
    init, pre = CpuOffload.init_hook, CpuOffload.pre_forward

    def init_hook(self, module):
        p.hide(list(module.parameters()) + list(module.buffers()))
        return init(self, module)

    def pre_forward(self, module, *args, **kwargs):
        p.show(list(module.parameters()) + list(module.buffers()), module)
        return pre(self, module, *args, **kwargs)

    monkeypatch.setattr(CpuOffload, "init_hook", init_hook)
    monkeypatch.setattr(CpuOffload, "pre_forward", pre_forward)
    return p


@pytest.fixture(scope="module")
def reference(pipe, small_clip):
    """Uncached and HetCache outputs without offloading (the `pipe` fixture has the same seed-0 weights)."""
    uncached = run_pipe(pipe, *small_clip, steps=len(SCHEDULE))
    apply_hetcache(pipe, HetCacheConfig(schedule=SCHEDULE, context_ratio=0.3))
    try:
        cached = run_pipe(pipe, *small_clip, steps=len(SCHEDULE))
    finally:
        remove_hetcache(pipe)
    return uncached, cached


@pytest.mark.parametrize("level", ["block_level", "leaf_level"])
@pytest.mark.parametrize("order", ["offload first", "hetcache first"])
def test_group_offloading_onloads_every_weight_before_use(poison, reference, small_clip, level, order):
    uncached, cached = reference
    pipe = eval_pipeline()
    config = HetCacheConfig(schedule=SCHEDULE, context_ratio=0.3)
    if order == "hetcache first":
        apply_hetcache(pipe, config)
    pipe.enable_group_offload(torch.device("cpu"), offload_type=level, num_blocks_per_group=1)
    assert poison.offloaded(pipe.transformer)
    if order == "offload first":
        assert torch.equal(run_pipe(pipe, *small_clip, steps=len(SCHEDULE)), uncached)  # the harness is sound
        apply_hetcache(pipe, config)
    poison.onloads.clear()
    got = run_pipe(pipe, *small_clip, steps=len(SCHEDULE))
    assert torch.equal(got, cached)
    assert poison.offloaded(pipe.transformer)  # and every group went back after use
    if level == "block_level":
        blocks = list(pipe.transformer.blocks) + list(pipe.transformer.vace_blocks)
        # every block is onloaded once per computed forward (FULL and PARTIAL, two branches), never on REUSE
        computed = 2 * sum(c != "R" for c in SCHEDULE)
        assert [sum(m is b for m in poison.onloads) for b in blocks] == [computed] * len(blocks)
    remove_hetcache(pipe)
    assert torch.equal(run_pipe(pipe, *small_clip, steps=len(SCHEDULE)), uncached)  # the hooks survive removal


def test_without_the_block_hooks_the_offloaded_weights_would_be_used(poison, small_clip, monkeypatch):
    pipe = eval_pipeline()
    pipe.enable_group_offload(torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
    apply_hetcache(pipe, HetCacheConfig(schedule=SCHEDULE))
    monkeypatch.setattr(offload, "enter", lambda module: ())
    assert torch.isnan(run_pipe(pipe, *small_clip, steps=len(SCHEDULE))).all()


@pytest.mark.slow
@pytest.mark.parametrize("order", ["offload first", "hetcache first"])
def test_model_cpu_offload_moves_both_experts_before_their_steps(poison, small_clip, order):
    steps, schedule = 6, "FPRFPF"  # boundary 0.8: transformer runs steps 0-2, transformer_2 steps 3-5
    reference = eval_pipeline(experts=2, boundary_ratio=0.8)
    apply_hetcache(reference, HetCacheConfig(schedule=schedule))
    expected = run_pipe(reference, *small_clip, steps=steps)

    pipe = eval_pipeline(experts=2, boundary_ratio=0.8)
    stats = StepStats()
    if order == "hetcache first":
        apply_hetcache(pipe, HetCacheConfig(schedule=schedule), stats)
    pipe.enable_model_cpu_offload(device="cpu")
    if order == "offload first":
        apply_hetcache(pipe, HetCacheConfig(schedule=schedule), stats)
    assert poison.offloaded(pipe.transformer) and poison.offloaded(pipe.transformer_2)
    for _ in range(2):  # the pipeline re-applies its offload hooks at the end of every call
        poison.onloads.clear()
        assert torch.equal(run_pipe(pipe, *small_clip, steps=steps), expected)
        assert [r.expert for r in stats.records if r.branch == "cond"] == ["transformer"] * 3 + ["transformer_2"] * 3
        # before every forward of each expert
        onloads = [sum(m is t for m in poison.onloads) for t in (pipe.transformer, pipe.transformer_2)]
        assert onloads == [steps, steps]
        assert poison.offloaded(pipe.transformer)  # offloaded when transformer_2 took over
    remove_hetcache(pipe)
    remove_hetcache(reference)
    assert torch.equal(run_pipe(pipe, *small_clip, steps=steps), run_pipe(reference, *small_clip, steps=steps))


class Halve(ModelHook):
    """A transformer hook that replaces its forward (as a whole-model cache would): the output halved."""

    def new_forward(self, module, *args, **kwargs):
        out = self.fn_ref.original_forward(*args, **kwargs)
        return (out[0] * 0.5,) if isinstance(out, tuple) else type(out)(sample=out.sample * 0.5)


@pytest.mark.slow
def test_another_caches_hooks_refuse_hetcache_but_method_none_wraps_them(pipe, small_clip):
    """HetCache's compact stream would bypass a block-replacing hook; method none (the bench's timer) runs inside it."""
    from diffusers import FirstBlockCacheConfig
    from diffusers.hooks import HookRegistry

    steps = len(SCHEDULE)
    transformer = pipe.transformer

    def alone_and_wrapped(enable, disable):
        enable()
        try:
            alone = run_pipe(pipe, *small_clip, steps=steps)
        finally:
            disable()
        enable()  # fresh cache state for the second run
        try:
            with pytest.raises(ValueError, match="replaces its forward"):
                apply_hetcache(pipe, HetCacheConfig(schedule=SCHEDULE))
            stats = StepStats()
            apply_hetcache(pipe, HetCacheConfig(method="none"), stats=stats)
            try:
                wrapped = run_pipe(pipe, *small_clip, steps=steps)
            finally:
                remove_hetcache(pipe)
        finally:
            disable()
        return alone, wrapped, stats

    fbc = FirstBlockCacheConfig(threshold=0.5)
    alone, wrapped, stats = alone_and_wrapped(lambda: transformer.enable_cache(fbc), transformer.disable_cache)
    assert torch.equal(alone, wrapped) and len(stats.records) == 2 * steps

    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    alone, wrapped, stats = alone_and_wrapped(
        lambda: registry.register_hook(Halve(), "halve"), lambda: registry.remove_hook("halve", recurse=False)
    )
    uncached = run_pipe(pipe, *small_clip, steps=steps)
    assert torch.equal(alone, wrapped) and len(stats.records) == 2 * steps
    assert not torch.equal(alone, uncached)  # the hook ran in both
