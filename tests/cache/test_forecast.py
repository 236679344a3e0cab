"""The residual forecast (cache/forecast.py) and the active set shared by the guidance branches."""

import pytest
import torch

from hetcache_cli.cache import HetCacheConfig, StepStats, apply_hetcache, estimate_cache_memory, remove_hetcache
from hetcache_cli.cache.flops import ModelDims
from hetcache_cli.cache.forecast import ResidualForecast

from test_engine import call, make_inputs, transformer  # noqa: F401 (the fixture)


def _linear(a, b, t):
    return a + b * (t / 1000.0)


def test_forecast_is_exact_on_linear_residual_trajectories():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 6, 4, generator=g), torch.randn(1, 6, 4, generator=g)
    residual = torch.zeros(1, 6, 4)
    fc = ResidualForecast((1, 6, 4), torch.float32, torch.device("cpu"))
    for t in (900.0, 820.0):  # two FULL steps, unevenly spaced like a flow-matching schedule
        new = _linear(a, b, t)
        fc.record_all(residual, new, t)
        residual.copy_(new)
    for t in (700.0, 500.0, 50.0):
        torch.testing.assert_close(fc.predict(residual, t), _linear(a, b, t), rtol=1e-5, atol=1e-5)


def test_partial_rows_are_re_anchored_and_their_slope_measured_from_the_anchor():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 5, 3, generator=g), torch.randn(1, 5, 3, generator=g)
    residual = torch.zeros(1, 5, 3)
    fc = ResidualForecast((1, 5, 3), torch.float32, torch.device("cpu"))
    first = _linear(a, b, 950.0)
    fc.record_all(residual, first, 950.0)
    residual.copy_(first)
    torch.testing.assert_close(fc.predict(residual, 600.0), first)  # one value: no slope, the plain cache
    second = _linear(a, b, 850.0)
    fc.record_all(residual, second, 850.0)
    residual.copy_(second)
    fc.predict(residual, 825.0)  # a REUSE step between, so the PARTIAL rows' anchor is two steps back
    # a PARTIAL step at 800 recomputes rows 1 and 3; row 3's value is off the line by `bump`
    bump = torch.full((1, 3), 0.5)
    rows = _linear(a, b, 800.0)[:, [1, 3]]
    rows[:, 1] += bump
    fc.record_rows(torch.tensor([[1, 3]]), residual[:, [1, 3]], rows, 800.0)
    residual[:, [1, 3]] = rows
    got = fc.predict(residual, 400.0)
    expected = _linear(a, b, 400.0)
    torch.testing.assert_close(got[:, [0, 1, 2, 4]], expected[:, [0, 1, 2, 4]], rtol=1e-5, atol=1e-5)
    # row 3: anchored at 800 with the slope from its anchor at 850, b + bump / (0.80 - 0.85) = b - 20 bump;
    # at 400 that is the line plus bump + 0.4 x 20 bump
    torch.testing.assert_close(got[:, 3], expected[:, 3] + 9 * bump, rtol=1e-5, atol=1e-4)
    # the next FULL step measures row 3's slope from its anchor at 800
    third = _linear(a, b, 700.0)
    fc.record_all(residual, third, 700.0)
    torch.testing.assert_close(fc.slope[:, 3], b[:, 3] + bump / 0.1, rtol=1e-5, atol=1e-4)


def test_partial_rows_computed_the_step_before_keep_their_slope():
    fc = ResidualForecast((1, 3, 2), torch.float32, torch.device("cpu"))
    residual = torch.zeros(1, 3, 2)
    for t, value in ((900.0, 1.0), (850.0, 2.0)):  # two FULL steps: slope (2 - 1) / -0.05 = -20
        new = torch.full((1, 3, 2), value)
        fc.record_all(residual, new, t)
        residual.copy_(new)
    # `F P`: rows 0 and 1 recomputed right after the FULL step keep its slope (a one-step gap turns a
    # PARTIAL value's small error into a poor slope); the anchor moves all the same
    fc.record_rows(torch.tensor([[0, 1]]), residual[:, [0, 1]], torch.full((1, 2, 2), 2.5), 825.0)
    residual[:, [0, 1]] = 2.5
    torch.testing.assert_close(fc.slope, torch.full((1, 3, 2), -20.0))
    torch.testing.assert_close(fc.t_last, torch.tensor([0.825, 0.825, 0.85]))
    # `F P R P`: row 2, last computed two steps back, takes the slope from its anchor: (4 - 2) / (0.8 - 0.85)
    fc.predict(residual, 812.0)
    fc.record_rows(torch.tensor([[2]]), residual[:, [2]], torch.full((1, 1, 2), 4.0), 800.0)
    torch.testing.assert_close(fc.slope[0, 2], torch.full((2,), -40.0))


def test_partial_rows_without_an_earlier_value_keep_slope_zero():
    fc = ResidualForecast((1, 4, 2), torch.float32, torch.device("cpu"))
    residual = torch.zeros(1, 4, 2)
    new = torch.ones(1, 2, 2)
    fc.record_rows(torch.tensor([[0, 2]]), residual[:, [0, 2]], new, 900.0)  # first value of rows 0 and 2
    residual[:, [0, 2]] = new
    assert fc.slope.abs().max() == 0
    torch.testing.assert_close(fc.predict(residual, 500.0), residual)  # the plain cache
    fc.record_rows(torch.tensor([[2]]), residual[:, [2]], 3 * torch.ones(1, 1, 2), 800.0)
    torch.testing.assert_close(fc.slope[0, 2], torch.full((2,), 2 / -0.1))  # (3 - 1) / (0.8 - 0.9)
    assert fc.slope[0, [0, 1, 3]].abs().max() == 0


def test_reuse_step_takes_the_forecast_residual(transformer):
    seen = {}
    hooks = [
        transformer.patch_embedding.register_forward_hook(
            lambda m, i, o: seen.__setitem__("x", o.flatten(2).transpose(1, 2))
        ),
        transformer.norm_out.register_forward_hook(lambda m, i, o: seen.__setitem__("head_in", i[0])),
    ]
    times = (900.0, 800.0, 600.0)
    try:
        with torch.no_grad():
            handle = apply_hetcache(transformer, HetCacheConfig(schedule="FFR", forecast="linear"))
            state = None
            residuals = []
            for step, t in enumerate(times[:2]):
                call(transformer, "cond", make_inputs(transformer, step, t))
                state = handle.state_manager._state_cache["cond"]
                residuals.append(state.residual.clone())
            call(transformer, "cond", make_inputs(transformer, 2, times[2]))
    finally:
        for h in hooks:
            h.remove()
    r0, r1 = residuals
    slope = (r1 - r0) / ((times[1] - times[0]) / 1000.0)
    expected = seen["x"] + r1 + slope * ((times[2] - times[1]) / 1000.0)
    torch.testing.assert_close(seen["head_in"], expected.float(), rtol=1e-5, atol=1e-5)
    assert slope.abs().max() > 1e-3  # the two FULL steps differ: the forecast is not the plain cache


def test_forecast_keeps_the_identities(transformer):
    # A = every token on a PARTIAL step is still the FULL result, forecast or not
    first, second = make_inputs(transformer, 0, 900.0), make_inputs(transformer, 1, 700.0)
    with torch.no_grad():
        expected = transformer(**second)[0]
        apply_hetcache(transformer, HetCacheConfig(schedule="FP", margin_ratio=1.0, context_ratio=1.0, forecast="linear"))
        call(transformer, "cond", first)
        got = call(transformer, "cond", second)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_forecast_auto_is_on_for_hetcache_and_off_for_teacache(transformer):
    with torch.no_grad():
        for method, on in (("hetcache", True), ("teacache", False)):
            handle = apply_hetcache(transformer, HetCacheConfig(method=method, schedule="F"))
            call(transformer, "cond", make_inputs(transformer, 0))
            state = handle.state_manager._state_cache["cond"]
            assert (state.forecast is not None) == on, method
            remove_hetcache(transformer)


def test_forecast_memory_is_one_more_residual_per_branch():
    dims = ModelDims(dim=1536, ffn_dim=8960, num_layers=30, num_vace_layers=15, num_heads=12)
    plain = estimate_cache_memory(dims, 14040, 2, torch.bfloat16)
    with_forecast = estimate_cache_memory(dims, 14040, 2, torch.bfloat16, forecast=True)
    assert with_forecast - plain == 2 * 14040 * (1536 * 2 + 5)  # slopes in bf16 + t_last (fp32) + seen (bool)


def test_guidance_branches_share_one_active_set(transformer):
    cond, uncond = make_inputs(transformer, 4), make_inputs(transformer, 4)
    uncond["encoder_hidden_states"] = torch.randn(1, 16, transformer.config.text_dim,
                                                  generator=torch.Generator().manual_seed(9))
    stats = StepStats()
    with torch.no_grad():
        handle = apply_hetcache(transformer, HetCacheConfig(schedule="FP", context_ratio=0.25, kmeans_clusters=2), stats)
        call(transformer, "cond", cond)
        call(transformer, "uncond", uncond)
        states = handle.state_manager._state_cache
        shared = states["cond"].active.clone()
        assert torch.equal(states["uncond"].active, shared)
        call(transformer, "cond", cond)
        call(transformer, "uncond", uncond)
    assert [r.tokens.computed for r in stats.records[2:]] == [handle.n_active] * 2
    # the uncond branch's own attention would have picked other context tokens: the sharing is real
    remove_hetcache(transformer)
    with torch.no_grad():
        alone = apply_hetcache(transformer, HetCacheConfig(schedule="F", context_ratio=0.25, kmeans_clusters=2))
        call(transformer, "uncond", uncond)
    own = alone.state_manager._state_cache["uncond"].active
    assert not torch.equal(own, shared)


def _two_full_steps(keep, fresh=None, shape=(1, 6, 4)):
    from hetcache_cli.cache.kv_forecast import KVForecast
    from hetcache_cli.cache.storage import KVSlot

    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, *shape, generator=g)  # K/V at t = 0
    b = torch.randn(2, *shape, generator=g)  # their slope per unit of t / 1000
    buffer = torch.zeros(1, 2, *shape)
    fc = KVForecast(1, shape, torch.float32, torch.device("cpu"), keep=keep)
    (slot,) = fc.wrap([KVSlot(buffer[0, 0], buffer[0, 1])])
    for t in (900.0, 700.0):  # two FULL steps
        fc.begin_full(t, fresh)
        slot.store(*(a + b * (t / 1000.0)))
    fc.begin_partial(500.0)
    return a, b, buffer, slot


def test_kv_forecast_extrapolates_between_full_steps_and_keeps_the_full_values():
    a, b, buffer, slot = _two_full_steps(keep=1.0)
    idx = torch.tensor([[1, 4]])
    fresh_k, fresh_v = torch.full((1, 2, 4), 7.0), torch.full((1, 2, 4), -7.0)
    k, v = slot.update(idx, fresh_k, fresh_v, torch.float32)
    expect_k, expect_v = a + b * 0.5
    expect_k[:, [1, 4]], expect_v[:, [1, 4]] = fresh_k, fresh_v
    # 4-bit slopes with a scale per row: within half a step of 7 of the row's largest slope, times h = 0.2
    tol = 0.2 * b.abs().max().item() / 14 * 1.001
    torch.testing.assert_close(k, expect_k, rtol=0, atol=tol)
    torch.testing.assert_close(v, expect_v, rtol=0, atol=tol)
    assert not torch.allclose(k[0, 0], (a + b * 0.7)[0, 0, 0], atol=tol)  # moved off the FULL value
    # the cache still holds the FULL step's values: the anchor of the line
    torch.testing.assert_close(buffer[0, 0], (a + b * 0.7)[0])


def test_kv_forecast_keeps_the_rows_that_moved_most_and_not_the_recomputed_ones():
    shape = (1, 8, 4)
    a, b, buffer, slot = _two_full_steps(keep=0.5, fresh=torch.tensor([0]), shape=shape)
    moved = b.square().sum(dim=(0, 1, 3))  # [N]: how far each token's K and V move per unit of time
    moved[0] = -1  # token 0 is recomputed on every PARTIAL step
    kept = set(torch.topk(moved, 4).indices.tolist())
    k, v = slot.update(torch.tensor([[0]]), torch.zeros(1, 1, 4), torch.zeros(1, 1, 4), torch.float32)
    at_full = (a + b * 0.7)[0, 0]
    extrapolated = (a + b * 0.5)[0, 0]
    tol = 0.2 * b.abs().max().item() / 14 * 1.001
    for n in range(1, 8):
        want = extrapolated[n] if n in kept else at_full[n]
        torch.testing.assert_close(k[0, n], want, rtol=0, atol=tol)
    assert 0 not in kept and len(kept) == 4


@pytest.mark.parametrize("dtype, dim", [(torch.bfloat16, 96), (torch.bfloat16, 1536), (torch.float32, 96),
                                        (torch.float16, 64), (torch.bfloat16, 5120)])
def test_kv_forecast_tensors_take_at_most_a_quarter_of_the_kv_caches(dtype, dim):
    from hetcache_cli.cache.kv_forecast import KVForecast, kv_forecast_bytes

    layers, shape = 3, (1, 400, dim)
    fc = KVForecast(layers, shape, dtype, torch.device("cpu"))
    kv = torch.zeros(layers, 2, *shape, dtype=dtype)
    held = sum(t.numel() * t.element_size() for t in fc.tensors)
    assert held == kv_forecast_bytes(layers, 1, 400, dim)
    assert held <= 0.25 * kv.numel() * kv.element_size()


def test_kv_forecast_is_on_for_float_device_caches_only(transformer):
    with torch.no_grad():
        for forecast, cache_dtype, on in (("auto", "auto", True), ("residual", "auto", False),
                                          ("linear", "float8_e4m3fn", False)):
            handle = apply_hetcache(transformer, HetCacheConfig(schedule="F", forecast=forecast,
                                                                cache_dtype=cache_dtype))
            call(transformer, "cond", make_inputs(transformer, 0))
            state = handle.state_manager._state_cache["cond"]
            assert (state.kv_forecast is not None) == on, (forecast, cache_dtype)
            if on:  # issue 26: the tensors it holds, at most a quarter of the K/V caches' bytes
                held = sum(t.numel() * t.element_size() for t in state.kv_forecast.tensors)
                assert 0 < held <= 0.25 * state.kv_buffer.numel() * state.kv_buffer.element_size()
            assert state.forecast is not None
            remove_hetcache(transformer)
