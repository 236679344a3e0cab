import shutil

import pytest
import torch

from hetcache_cli.errors import InputError
from hetcache_cli.pipeline.model import PipelinePool, resolve_dtype, resolve_model
from hetcache_cli.resources import EMBEDDED_MODEL


def test_embedded_model_is_found_and_loads():
    ref = resolve_model(None)
    assert ref.name == EMBEDDED_MODEL and (ref.path / "model_index.json").is_file()
    pipe, info = PipelinePool().get(None, "cpu", "auto")
    assert type(pipe).__name__ == "WanVACEPipeline"
    assert info["dtype"] == "float32" and pipe.vae.dtype == torch.float32


def test_hub_id_resolves_from_the_local_cache_only(tiny_model_dir, tmp_path, monkeypatch):
    hub = tmp_path / "hf" / "hub"
    repo = hub / "models--someone--tiny-vace"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(tiny_model_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    import huggingface_hub.constants

    # the cache location is read from the environment when huggingface_hub is imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    ref = resolve_model("someone/tiny-vace")
    assert ref.path.resolve() == snapshot.resolve()
    pipe, info = PipelinePool().get("someone/tiny-vace", "cpu", "float32")
    assert info["name"] == "someone/tiny-vace" and pipe.transformer.config.num_layers == 2


def test_pool_loads_each_model_once(tiny_model_dir):
    pool = PipelinePool()
    a, _ = pool.get(str(tiny_model_dir), "cpu", "float32")
    b, _ = pool.get(str(tiny_model_dir), "cpu", "auto")
    assert a is b


def test_incomplete_folder_is_input_error(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "transformer")
    with pytest.raises(InputError, match="cannot load model"):
        PipelinePool().get(str(broken), "cpu", "float32")


def test_dtype_auto():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16
