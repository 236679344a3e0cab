"""`hetcache edit` as a GPU user runs it, in bfloat16 and float16, against the float32 run.

Floors are in-mask PSNR (dB) of the half-precision output against the float32 output of the same
command, both lossless. Measured (torch 2.13, CPU): bfloat16 53.0-56.0 dB and float16 61.9-65.0 dB on
every case of the demo model, the random tiny model 54.4 / 62.7 dB, guidance 5 the lowest at 44.0 /
58.9 dB; the floors sit 6-10 dB below. bfloat16 keeps 8 mantissa bits, float16 11: float16 lands
about 9 dB closer, as expected.
"""

import pytest

from rehearsal_helpers import DEMO_EDIT, HALF, ROOT, read_mask_image

pytestmark = pytest.mark.rehearsal

SHORT = ["--steps", 10]

# name: (extra flags, floor in dB for bfloat16, for float16)
CASES = {
    "quality": (["--preset", "quality"], 45.0, 55.0),
    "balanced": (["--preset", "balanced"], 45.0, 55.0),
    "fast": (["--preset", "fast"], 45.0, 55.0),
    "uncached": (["--cache", "none", *SHORT], 45.0, 55.0),
    "teacache": (["--cache", "teacache", *SHORT], 45.0, 55.0),
    "schedule": (["--schedule", "FFPPRPPRPF", *SHORT], 45.0, 55.0),
    "guidance-5": (["--guidance-scale", 5, "--preset", "balanced", *SHORT], 38.0, 50.0),
    "offload-model": (["--offload", "model", "--preset", "balanced", *SHORT], 45.0, 55.0),
    "offload-group": (["--offload", "group", "--preset", "balanced", *SHORT], 45.0, 55.0),
    "offload-leaf": (["--offload", "leaf", "--preset", "balanced", *SHORT], 45.0, 55.0),
}


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("case", list(CASES))
def test_demo_edit(rehearsal, demo_mask, case, dtype):
    flags, floor_bf16, floor_fp16 = CASES[case]
    floor = floor_bf16 if dtype == "bfloat16" else floor_fp16
    rehearsal.check(dtype, *DEMO_EDIT, *flags, region=demo_mask, min_db=floor)


@pytest.fixture(scope="module")
def cache_specs(tmp_path_factory):
    """Spec files for the cache layouts a GPU user picks when memory is short, and the step-only baseline."""
    root = tmp_path_factory.mktemp("specs")
    specs = {}
    for name, cache in {
        "fp8": "cache: {preset: balanced, cache_dtype: float8_e4m3fn}",
        "host-kv": "cache: {preset: balanced, cache_device: cpu}",
        "fp8-host-kv": "cache: {preset: balanced, cache_dtype: float8_e4m3fn, cache_device: cpu}",
        # step reuse with the residual forecast: what calibrate --step-reuse points to where PARTIAL steps do not pay
        "step-reuse-forecast": "cache: {method: teacache, forecast: residual, reuse_threshold: 0.08}",
    }.items():
        specs[name] = root / f"{name}.yaml"
        specs[name].write_text(cache + "\n")
    return specs


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("layout", ["fp8", "host-kv", "fp8-host-kv", "step-reuse-forecast"])
def test_cache_layouts(rehearsal, demo_mask, cache_specs, layout, dtype):
    floor = 45.0 if dtype == "bfloat16" else 55.0
    rehearsal.check(dtype, *DEMO_EDIT, "--spec", cache_specs[layout], *SHORT, region=demo_mask, min_db=floor)


@pytest.mark.parametrize("dtype", HALF)
def test_windows_and_crops(rehearsal, demo_mask, dtype):
    """Three overlapping windows, each on a crop around the ball, stitched back at 160x160."""
    flags = ["--window-frames", 9, "--window-overlap", 5, "--crop-min-size", 96, "--max-area", 96 * 96]
    half = rehearsal.edit(dtype, *DEMO_EDIT, *flags, *SHORT)
    assert len(half.stats["windows"]) >= 2
    floor = 45.0 if dtype == "bfloat16" else 55.0
    rehearsal.check(dtype, *DEMO_EDIT, *flags, *SHORT, region=demo_mask, min_db=floor)


@pytest.fixture(scope="module")
def two_expert_dir(tmp_path_factory):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_two_expert_model import A14B_BOUNDARY, build

    return build(tmp_path_factory.mktemp("two") / "model", A14B_BOUNDARY, 0.05, 0)


@pytest.mark.parametrize("dtype", HALF)
def test_two_experts(rehearsal, demo_mask, two_expert_dir, dtype):
    flags = ["--model", two_expert_dir, "--preset", "fast", *SHORT]
    half = rehearsal.edit(dtype, *DEMO_EDIT, *flags)
    assert {s["expert"] for s in half.stats["steps"]} == {"transformer", "transformer_2"}
    floor = 45.0 if dtype == "bfloat16" else 55.0
    rehearsal.check(dtype, *DEMO_EDIT, *flags, region=demo_mask, min_db=floor)


@pytest.mark.parametrize("dtype", HALF)
def test_tiny_random_model(rehearsal, small_clip, tiny_model_dir, dtype):
    """A random-weight model at guidance 5: no training to make the output smooth."""
    import numpy as np

    args = [small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball", "--model", tiny_model_dir,
            "--preset", "balanced", "--guidance-scale", 5, *SHORT]  # fmt: skip
    region = read_mask_image(small_clip["mask"], (64, 64))
    assert np.any(region)
    floor = 45.0 if dtype == "bfloat16" else 55.0
    rehearsal.check(dtype, *args, region=region, min_db=floor)
