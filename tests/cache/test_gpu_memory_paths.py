"""The CUDA-only parts of issue 16's memory paths: streams, pinned host K/V, group offloading with prefetch.

Skipped without a GPU; on CPU the same code runs with synchronous copies (test_storage.py, test_offload.py).
"""

import pytest
import torch

from hetcache_cli.cache import HetCacheConfig, StepStats, apply_hetcache, remove_hetcache

from cache_helpers import clip, eval_pipeline, run_pipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SCHEDULE = "FPPRPFPF"


def run(pipe, config, video, mask):
    stats = StepStats()
    apply_hetcache(pipe, config, stats)
    try:
        return run_pipe(pipe, video, mask, steps=len(SCHEDULE)), stats
    finally:
        remove_hetcache(pipe)


@pytest.fixture(scope="module")
def cuda_clip():
    return clip(17, 128, (40, 90, 40, 90))


def test_pinned_host_kv_with_layer_ahead_copies_equals_the_device_cache(cuda_clip):
    pipe = eval_pipeline().to("cuda")
    device, _ = run(pipe, HetCacheConfig(schedule=SCHEDULE, cache_device="cuda"), *cuda_clip)
    host, stats = run(pipe, HetCacheConfig(schedule=SCHEDULE, cache_device="cpu"), *cuda_clip)
    assert torch.equal(host, device)
    assert stats.cache_memory_measured_bytes == stats.cache_memory_bytes
    fp8_device, _ = run(pipe, HetCacheConfig(schedule=SCHEDULE, cache_dtype="float8_e4m3fn"), *cuda_clip)
    fp8_host, _ = run(pipe, HetCacheConfig(schedule=SCHEDULE, cache_dtype="float8_e4m3fn", cache_device="cpu"),
                      *cuda_clip)
    assert torch.equal(fp8_host, fp8_device)


@pytest.mark.parametrize("level", ["block_level", "leaf_level"])
def test_group_offloading_with_streams_equals_the_resident_run(cuda_clip, level):
    resident, _ = run(eval_pipeline().to("cuda"), HetCacheConfig(schedule=SCHEDULE), *cuda_clip)
    pipe = eval_pipeline()
    pipe.enable_group_offload(torch.device("cuda"), offload_type=level, num_blocks_per_group=1, use_stream=True)
    got, _ = run(pipe, HetCacheConfig(schedule=SCHEDULE), *cuda_clip)
    torch.testing.assert_close(got, resident, rtol=0, atol=1e-6)
