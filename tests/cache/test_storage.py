"""K/V storage layouts: fp8 with per-layer-and-head scales, host memory with layer-ahead copies."""

import pytest
import torch

from hetcache_cli.cache import (
    HetCacheConfig, ModelDims, StepStats, apply_hetcache, estimate_cache_memory, remove_hetcache,
)  # fmt: skip
from hetcache_cli.cache.storage import FP8, CacheLayout, KVStore, dequantise, quantise

from cache_helpers import run_pipe

SCHEDULE = "FPPRPFPF"


@pytest.fixture(scope="module")
def runs(pipe, small_clip):
    """The same PARTIAL/REUSE schedule under each layout: output latents and statistics."""
    out = {}
    for dtype, device in [("auto", "auto"), ("auto", "cpu"), ("float8_e4m3fn", "auto"), ("float8_e4m3fn", "cpu")]:
        stats = StepStats()
        # forecast `residual`: the K/V forecast exists for float device caches only; the layouts compared here
        # must run the same method
        config = HetCacheConfig(schedule=SCHEDULE, cache_dtype=dtype, cache_device=device, margin_ratio=0.5,
                                context_ratio=0.25, forecast="residual")
        handle = apply_hetcache(pipe, config, stats)
        layouts = []
        latents = run_pipe(pipe, *small_clip, steps=len(SCHEDULE),
                           callback_on_step_end=lambda p, i, t, kw: layouts.append(handle.plan.expert(handle.expert).layout) or kw)
        remove_hetcache(pipe)
        out[(dtype, device)] = (latents, stats, layouts[0])
    return out


def test_quantise_round_trip_error_is_within_fp8_precision():
    torch.manual_seed(0)
    x = torch.randn(2, 37, 3 * 16) * torch.tensor([0.01, 1.0, 50.0]).repeat_interleave(16)  # heads of other scales
    scale = torch.empty(3)
    q = quantise(x, 3, scale)
    assert q.dtype == FP8 and q.shape == x.shape
    torch.testing.assert_close(scale, x.unflatten(-1, (3, 16)).abs().amax(dim=(0, 1, 3)) / 448.0)
    back = dequantise(q, scale, torch.float32)
    # e4m3: 3 mantissa bits (relative rounding <= 2^-4), subnormal steps of 2^-9 x scale near zero
    bound = x.abs() * 2.0**-4 + scale.repeat_interleave(16) * 2.0**-9
    assert bool(((back - x).abs() <= bound * 1.0001).all())


def test_fp8_cache_stays_close_to_the_float_cache(runs):
    float_out = runs[("auto", "auto")][0]
    fp8_out = runs[("float8_e4m3fn", "auto")][0]
    # stated tolerance: within 0.5% of the output's largest magnitude (measured: 0.029%; a bfloat16 cache: 0.12%)
    err = (fp8_out - float_out).abs().max() / float_out.abs().max()
    assert 0 < err < 5e-3


def test_host_memory_layout_is_exactly_the_device_layout(runs):
    # on a CPU run the host layout runs its own code (staging buffers, layer-ahead copies): same numbers
    assert runs[("auto", "cpu")][2].host and not runs[("auto", "auto")][2].host
    assert torch.equal(runs[("auto", "cpu")][0], runs[("auto", "auto")][0])
    assert torch.equal(runs[("float8_e4m3fn", "cpu")][0], runs[("float8_e4m3fn", "auto")][0])


def test_measured_cache_bytes_equal_the_estimate_and_fp8_saves_two_thirds(runs):
    for key, (_, stats, layout) in runs.items():
        assert stats.cache_memory_measured_bytes == stats.cache_memory_bytes > 0, key
        assert stats.text_kv_memory_measured_bytes == stats.text_kv_memory_bytes > 0, key
    float32 = runs[("auto", "auto")][1].cache_memory_bytes
    fp8 = runs[("float8_e4m3fn", "auto")][1].cache_memory_bytes
    dims = ModelDims(dim=64, ffn_dim=128, num_layers=4, num_vace_layers=2, num_heads=4)
    # hetcache's default residual forecast keeps its slopes next to the residual
    assert fp8 == estimate_cache_memory(dims, 48, 2, "float8_e4m3fn", model_dtype=torch.float32, forecast=True)
    assert float32 == estimate_cache_memory(dims, 48, 2, torch.float32, forecast=True)
    # K/V at 1 byte instead of 4; the residual and its forecast slopes stay float32
    kept = estimate_cache_memory(dims, 48, 2, torch.float32, method="teacache", forecast=True)
    assert 0 < kept and fp8 - kept <= (float32 - kept) / 3


def test_fp8_partial_with_every_token_active_is_exact(pipe, small_clip):
    # every row of the layer is fresh, so the dequantised stale cache never reaches the attention
    expected = run_pipe(pipe, *small_clip, steps=3)
    config = HetCacheConfig(schedule="FPP", cache_dtype="float8_e4m3fn", margin_ratio=1.0, context_ratio=1.0)
    apply_hetcache(pipe, config)
    try:
        got = run_pipe(pipe, *small_clip, steps=3)
    finally:
        remove_hetcache(pipe)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_host_store_fetches_each_layer_once_and_one_ahead():
    layers, shape = 4, (1, 10, 8)
    store = KVStore(layers, shape, CacheLayout(torch.float32, torch.float32, host=True), torch.device("cpu"), heads=2)
    loads = []
    original = store._load
    store._load = lambda layer, s: loads.append((layer, s)) or original(layer, s)
    for layer in range(layers):
        store.write(layer, torch.full(shape, float(layer)), torch.full(shape, -float(layer)))
    order = [2, 3, 0, 1]  # VACE layers first, as the stack runs them
    store.begin(order, prefetch=True)
    for layer in order:
        k, v = store.read(layer, torch.float32)
        assert torch.equal(k, torch.full(shape, float(layer))) and torch.equal(v, torch.full(shape, -float(layer)))
    assert loads == [(2, 0), (3, 1), (0, 0), (1, 1)]  # the first at `begin`, then each one layer ahead
