"""The prompt's cross-attention K/V computed once per run and branch: exact, and counted in the FLOPs."""

import pytest
import torch

from hetcache_cli.cache import HetCacheConfig, ModelDims, StepStats, apply_hetcache, forward_flops, remove_hetcache

from cache_helpers import run_pipe

SCHEDULE = "FPRPFPF"


def cached_run(pipe, clip, text_kv: bool, stats=None, **kwargs):
    apply_hetcache(pipe, HetCacheConfig(schedule=SCHEDULE, text_kv=text_kv, context_ratio=0.3), stats)
    try:
        return run_pipe(pipe, *clip, steps=len(SCHEDULE), **kwargs)
    finally:
        remove_hetcache(pipe)


def count_text_embedder_calls(pipe):
    calls = []
    handle = pipe.transformer.condition_embedder.text_embedder.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_output_is_unchanged_and_the_text_embedder_runs_once_per_branch(pipe, small_clip):
    calls, handle = count_text_embedder_calls(pipe)
    try:
        every_step = cached_run(pipe, small_clip, text_kv=False)
        n_without = len(calls)
        calls.clear()
        once = cached_run(pipe, small_clip, text_kv=True)
    finally:
        handle.remove()
    assert torch.equal(once, every_step)
    assert n_without == 2 * sum(c != "R" for c in SCHEDULE) and len(calls) == 2  # cond and uncond, at step 0


@pytest.mark.parametrize("inplace", [False, True])
def test_a_prompt_changed_by_a_callback_is_projected_again(pipe, small_clip, inplace):
    def swap(_pipe, i, t, kwargs):
        if i != 1:
            return {}
        if inplace:
            kwargs["prompt_embeds"].mul_(1.5)
            return {}
        return {"prompt_embeds": kwargs["prompt_embeds"] * 1.5}

    extra = dict(callback_on_step_end=swap, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    reference = cached_run(pipe, small_clip, text_kv=False, **extra)
    got = cached_run(pipe, small_clip, text_kv=True, **extra)
    unswapped = cached_run(pipe, small_clip, text_kv=True)
    assert torch.equal(got, reference)
    assert (got - unswapped).abs().max() > 1e-4  # the swap mattered


def test_flops_count_the_text_projection_only_where_it_ran(pipe, small_clip):
    stats = StepStats()
    cached_run(pipe, small_clip, text_kv=True, stats=stats)
    dims = ModelDims.from_config(pipe.transformer.config, text_len=512)
    cond = [r for r in stats.records if r.branch == "cond"]
    layers = dims.num_layers + dims.num_vace_layers
    saved = layers * 4 * 512 * dims.dim**2
    assert cond[0].flops == pytest.approx(forward_flops(dims, 48)) == pytest.approx(cond[0].flops_full)
    assert cond[4].decision == "full" and cond[4].flops == pytest.approx(forward_flops(dims, 48) - saved)
    assert cond[1].flops == pytest.approx(forward_flops(dims, 48, cond[1].tokens.computed) - saved)
    assert all(r.flops_full == pytest.approx(forward_flops(dims, 48)) for r in stats.records)
