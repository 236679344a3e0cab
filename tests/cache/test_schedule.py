import pytest

from hetcache_cli.cache import HetCacheConfig, ModelDims, estimate_run_flops, forward_flops, resolve_schedule
from hetcache_cli.cache.schedule import (
    FULL,
    PARTIAL,
    REUSE,
    calibrate_thresholds,
    decide,
    normalise_signal,
    parse_schedule,
    schedule_letters,
)


def letters(signal, **kwargs):
    return schedule_letters(decide(signal, HetCacheConfig(**kwargs)))


def test_rule_on_a_flat_signal():
    # each step adds 0.1; reuse below 0.15, full at 0.35 since the last FULL
    signal = [0.0] + [0.1] * 9
    assert letters(signal, reuse_threshold=0.15, full_threshold=0.35, warmup_steps=1, max_partial_run=9) == "FRPRFRPRFF"


def test_partial_resets_only_the_reuse_accumulator():
    signal = [0.0] + [0.1] * 7
    # every step is PARTIAL (0.1 >= reuse 0.05) until 0.3 accumulates since the last FULL
    assert letters(signal, reuse_threshold=0.05, full_threshold=0.3, warmup_steps=1, max_partial_run=9) == "FPPFPPFF"


def test_warmup_and_last_step_are_full():
    signal = [0.0] + [0.001] * 7
    assert letters(signal, reuse_threshold=0.5, full_threshold=1.0, warmup_steps=3, max_partial_run=9) == "FFFRRRRF"


def test_max_partial_run_forces_a_refresh():
    signal = [0.0] + [0.001] * 9
    assert letters(signal, reuse_threshold=0.5, full_threshold=1.0, warmup_steps=1, max_partial_run=2) == "FRRFRRFRRF"
    assert letters(signal, reuse_threshold=0.5, full_threshold=1.0, warmup_steps=1, max_partial_run=0) == "F" * 10


def test_max_full_run_puts_a_partial_step_between_threshold_full_steps():
    # every step reaches the full threshold on its own: all FULL without the cap
    signal = [0.0] + [0.5] * 9
    assert letters(signal, reuse_threshold=0.0, full_threshold=0.1) == "F" * 10
    assert letters(signal, reuse_threshold=0.0, full_threshold=0.1, max_full_run=1) == "FFPFPFPFPF"
    assert letters(signal, reuse_threshold=0.0, full_threshold=0.1, max_full_run=3) == "FFFFPFFFPF"
    # forced FULL steps (first, warm-up, last) are not counted and never turned PARTIAL
    assert letters(signal, reuse_threshold=0.0, full_threshold=0.1, max_full_run=1, warmup_steps=3) == "FFFFPFPFPF"
    # a REUSE step ends a run of FULL steps; teacache has no PARTIAL step and ignores the cap
    assert letters([0.0, 0.3, 0.3, 0.01, 0.3, 0.3, 0.3], reuse_threshold=0.05, full_threshold=0.2,
                   max_full_run=2) == "FFFRFFF"  # fmt: skip
    assert letters(signal, method="teacache", reuse_threshold=0.1, full_threshold=0.1, max_full_run=1) == "F" * 10
    with pytest.raises(ValueError, match="max_full_run"):
        HetCacheConfig(max_full_run=0)


def test_teacache_has_no_partial_steps():
    signal = [0.0] + [0.1] * 9
    got = letters(
        signal, method="teacache", reuse_threshold=0.15, full_threshold=0.35, warmup_steps=1, max_partial_run=9
    )
    assert got == "FRFRFRFRFF"


def test_thresholds_are_monotone():
    signal = normalise_signal([0.0, 0.3, 0.1, 0.5, 0.2, 0.2, 0.4, 0.1, 0.3, 0.2, 0.6, 0.1])
    fulls = [decide(signal, HetCacheConfig(full_threshold=f, reuse_threshold=0.0)).count(FULL) for f in (0.1, 0.4, 0.8)]
    reuses = [decide(signal, HetCacheConfig(reuse_threshold=r, full_threshold=0.9)).count(REUSE) for r in (0.0, 0.1, 0.2)]
    assert fulls == sorted(fulls, reverse=True) and fulls[0] > fulls[-1]
    assert reuses == sorted(reuses) and reuses[-1] > reuses[0]


def test_normalised_signal_sums_to_one_and_rescale_applies():
    assert sum(normalise_signal([0.0, 2.0, 2.0, 4.0])) == pytest.approx(1.0)
    assert normalise_signal([0.0, 1.0, 2.0], rescale=[1.0, 0.0, 0.0]) == pytest.approx([0.0, 0.2, 0.8])  # x^2
    assert normalise_signal([0.0]) == [0.0]


def test_explicit_schedule():
    assert parse_schedule("FpR", 3) == [FULL, PARTIAL, REUSE]
    with pytest.raises(ValueError, match="has 4 letters but the run has 5 denoising steps"):
        parse_schedule("FFPF", 5)
    with pytest.raises(ValueError, match="first step must be F"):
        parse_schedule("PFF", 3)
    with pytest.raises(ValueError, match="first step must be F"):
        HetCacheConfig(schedule="RFF")


def test_resolve_schedule_on_the_model(pipe):
    pipe.scheduler.set_timesteps(12)
    timesteps = pipe.scheduler.timesteps
    auto = resolve_schedule(pipe.transformer, HetCacheConfig(warmup_steps=2), timesteps)
    assert len(auto) == 12 and auto[:2] == [FULL, FULL] and auto[-1] == FULL
    assert resolve_schedule(pipe.transformer, HetCacheConfig(method="none"), timesteps) == [FULL] * 12
    explicit = resolve_schedule(pipe.transformer, HetCacheConfig(schedule="FFPPRPPRPFRF"), timesteps)
    assert schedule_letters(explicit) == "FFPPRPPRPFRF"
    with pytest.raises(ValueError, match="12 denoising steps"):
        resolve_schedule(pipe.transformer, HetCacheConfig(schedule="FFPF"), timesteps)


def test_estimate_run_flops():
    dims = ModelDims(dim=64, ffn_dim=128, num_layers=4, num_vace_layers=2, num_heads=4, text_len=16)
    est = estimate_run_flops(dims, 100, 25, ["full", "partial", "reuse", "full"], branches=2)
    full, part = forward_flops(dims, 100), forward_flops(dims, 100, 25)
    assert est["flops"] == pytest.approx(2 * (2 * full + part))
    assert est["flops_full"] == pytest.approx(8 * full)
    assert est["decisions"] == {"full": 2, "partial": 1, "reuse": 1}


def test_calibrate_thresholds_hits_the_targets():
    signal = [0.0] + [0.05, 0.1, 0.07, 0.12, 0.03, 0.09, 0.1, 0.06, 0.08, 0.11, 0.04, 0.1, 0.05, 0.07, 0.09] * 2
    config = HetCacheConfig(warmup_steps=1, max_partial_run=50)
    reuse, full = calibrate_thresholds(signal, config, full_fraction=0.25, reuse_fraction=0.3)
    decisions = decide(normalise_signal(signal), HetCacheConfig(warmup_steps=1, max_partial_run=50,
                                                                reuse_threshold=reuse, full_threshold=full))
    assert abs(decisions.count(FULL) / len(signal) - 0.25) < 0.1
    assert abs(decisions.count(REUSE) / len(signal) - 0.3) < 0.1
