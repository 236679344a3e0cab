"""The memory estimator behind `hetcache memory` and the README's what-fits-where table."""

import json

import pytest
import torch
from typer.testing import CliRunner

from hetcache_cli.cache import ModelDims
from hetcache_cli.cache.kv_forecast import kv_forecast_bytes
from hetcache_cli.cache.state import cache_layout, cache_memory
from hetcache_cli.cli.app import app
from hetcache_cli.pipeline.memory import GIB, estimate, format_table, model_sizes
from hetcache_cli.resources import embedded_model_dir


@pytest.fixture(scope="module")
def sizes():
    return {m: model_sizes(m) for m in ("wan2.1-vace-1.3b", "wan2.1-vace-14b", "wan2.2-vace-fun-a14b")}


def test_parameter_counts_match_the_published_checkpoints(sizes):
    big = sizes["wan2.1-vace-14b"]
    # Wan2.x VACE 14B transformer: 34.7 GB of bf16 shards; the Wan VAE: 508 MB of float32; UMT5-XXL: 5.7B
    assert big.transformers[0].param_bytes == pytest.approx(34.7e9, rel=0.01)
    assert big.vae_params * 4 == pytest.approx(508e6, rel=0.01)
    assert big.text_encoder_params == pytest.approx(5.68e9, rel=0.01)
    assert len(sizes["wan2.2-vace-fun-a14b"].transformers) == 2


def test_caches_are_the_engines_estimate_and_the_design_figure(sizes):
    est = estimate(sizes["wan2.1-vace-14b"], 81, 480, 832, "bfloat16", "cuda", "group", forecast="residual")
    dims = ModelDims(dim=5120, ffn_dim=13824, num_layers=40, num_vace_layers=8, num_heads=40)
    layout = cache_layout("bfloat16", torch.bfloat16, text_kv=True, forecast=True)
    assert est["tokens"] == 32760
    assert est["gpu_cache_bytes"] == cache_memory(dims, 32760, 2, layout, torch.bfloat16)["device"]
    kv = 2 * 48 * 2 * 32760 * 5120 * 2
    assert kv / GIB == pytest.approx(60.0, abs=0.1)  # docs/method.md section 7: 60 GiB of K/V
    # the default forecast (linear) keeps K/V slopes: 4 bits on 80% of the rows, at most a quarter of the K/V
    default = estimate(sizes["wan2.1-vace-14b"], 81, 480, 832, "bfloat16", "cuda", "group")
    slopes = default["gpu_cache_bytes"] - est["gpu_cache_bytes"]
    assert slopes == 2 * kv_forecast_bytes(48, 1, 32760, 5120) and 0.2 * kv < slopes <= 0.25 * kv
    host = estimate(sizes["wan2.1-vace-14b"], 81, 480, 832, "bfloat16", "cpu", "model")
    assert host["gpu_cache_bytes"] < est["gpu_cache_bytes"] / 10 and host["host_bytes"] > 60 * GIB
    assert host["fits_gb"] == [48, 80] and est["fits_gb"] == [80]
    fp8 = estimate(sizes["wan2.1-vace-14b"], 81, 480, 832, "float8_e4m3fn", "cuda", "group")
    assert fp8["gpu_cache_bytes"] < 0.55 * est["gpu_cache_bytes"]


def test_offload_modes_order_the_weights_on_the_gpu(sizes):
    two = sizes["wan2.2-vace-fun-a14b"]
    gpu = {o: estimate(two, 33, 480, 832, offload=o)["gpu_weights_bytes"] for o in ("none", "model", "group", "leaf")}
    one = two.transformers[0].param_bytes
    assert gpu["none"] == 2 * one + two.text_encoder_params * 2 + two.vae_params * 4  # both experts resident
    assert gpu["model"] == one  # one expert at a time
    assert gpu["leaf"] < gpu["group"] < 0.1 * one
    assert "| wan2.2-vace-fun-a14b | 33 | bf16 |" in format_table([
        {"model": "wan2.2-vace-fun-a14b", "frames": 33, "cache_dtype": "bfloat16",
         "cells": [estimate(two, 33, 480, 832, offload=o) for o in ("none", "model")]}])


def test_a_model_folder_is_read_from_its_configs():
    from hetcache_cli.pipeline.model import ModelRef, load_pipeline

    sizes = model_sizes(str(embedded_model_dir()), torch.float32)
    pipe = load_pipeline(ModelRef("embedded", embedded_model_dir()), torch.device("cpu"), torch.float32)
    assert sizes.transformers[0].param_bytes == sum(p.numel() * 4 for p in pipe.transformer.parameters())
    assert sizes.text_encoder_params == sum(p.numel() for p in pipe.text_encoder.parameters())
    assert sizes.vae_params == sum(p.numel() for p in pipe.vae.parameters())


def test_memory_command():
    runner = CliRunner()
    r = runner.invoke(app, ["memory", "--model", "wan2.1-vace-1.3b", "--frames", "33", "--offload", "model", "--json"])
    assert r.exit_code == 0, r.stderr
    est = json.loads(r.stdout)
    assert est["tokens"] == 14040 and est["offload"] == "model" and est["fits_gb"] == [24, 48, 80]
    r = runner.invoke(app, ["memory", "--model", "wan9-vace", "--frames", "33"])
    assert r.exit_code == 2 and "is not known here" in r.stderr
    r = runner.invoke(app, ["memory", "--model", "wan2.1-vace-1.3b", "--frames", "32"])
    assert r.exit_code == 2 and "use 4k+1 frames" in r.stderr
    for args in (["--offload", "bogus"], ["--model", "wan2.1-vace-1.3b", "--offload", "bogus"]):  # table or one model
        r = runner.invoke(app, ["memory", *args])
        assert r.exit_code == 2 and "--offload 'bogus' is not valid" in r.stderr and not r.stdout
