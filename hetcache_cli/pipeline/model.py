"""Finding and loading a Wan-VACE pipeline: the embedded model, a local folder, or a cached hub id.

Nothing is ever downloaded here: a hub id must already be in the local Hugging Face cache.
Wan2.2 VACE-Fun folders (`transformer_2` and a `boundary_ratio`) load the same way. Weights go
to the device whole, or stay in host memory under diffusers' offloading (`offload`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from hetcache_cli.errors import HetcacheError, InputError
from hetcache_cli.resources import EMBEDDED_MODEL, embedded_model_dir

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ModelRef:
    name: str  # what the user asked for ("embedded", a path, or a hub id)
    path: Path  # local diffusers folder


def resolve_model(model: str | None) -> ModelRef:
    """Map `--model` to a local diffusers folder, or raise InputError saying how to get one."""
    if model is None or model == EMBEDDED_MODEL:
        path = embedded_model_dir()
        if not (path / "model_index.json").is_file():
            raise InputError(
                f"the embedded model is missing from {path}; reinstall hetcache from a full checkout"
            )
        return ModelRef(EMBEDDED_MODEL, path)
    path = Path(model).expanduser()
    if path.exists():
        _check_wan_vace_folder(path)
        return ModelRef(model, path)
    if _looks_like_hub_id(model):
        return ModelRef(model, _cached_snapshot(model))
    raise InputError(f"model {model!r} is neither a folder nor a hub id (owner/name); pass a diffusers Wan-VACE folder")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def load_pipeline(ref: ModelRef, device: torch.device, dtype: torch.dtype, offload: str = "none"):
    """WanVACEPipeline with the VAE in float32 (as Wan recommends) and the rest in `dtype`.

    `offload`: `none` (everything on `device`), `model` (`enable_model_cpu_offload`), `group` /
    `leaf` (`enable_group_offload` at block / leaf level, on a CUDA stream when `device` is CUDA).
    """
    from diffusers import AutoencoderKLWan, WanVACEPipeline

    try:
        vae = AutoencoderKLWan.from_pretrained(ref.path, subfolder="vae", dtype=torch.float32)
        pipe = WanVACEPipeline.from_pretrained(ref.path, vae=vae, dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot load model {ref.name!r} from {ref.path}: {first}; pass a complete diffusers Wan-VACE folder"
        ) from exc
    if pipe.transformer is None:
        raise InputError(f"model {ref.name!r} has no transformer; pass a Wan2.1-VACE pipeline folder")
    try:
        place(pipe, device, offload)
    except RuntimeError as exc:
        raise HetcacheError(f"cannot move the model to {device} (offload {offload}): {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def place(pipe, device: torch.device, offload: str) -> None:
    """Put the pipeline's weights on `device`, or in host memory with the offload hooks that move them."""
    if offload == "none":
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload in ("group", "leaf"):
        level = "block_level" if offload == "group" else "leaf_level"
        stream = device.type == "cuda"  # layer-ahead prefetch on a side stream
        pipe.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type=level, num_blocks_per_group=1,
            use_stream=stream,
        )  # fmt: skip
    else:
        raise InputError(f"offload {offload!r} is not valid; use none, model, group or leaf")


def guidance_kwargs(pipe, guidance_scale_2: float | None, model_name: str | None) -> dict:
    """`guidance_scale_2` for the pipeline call: only a two-expert (Wan2.2) model takes it."""
    if guidance_scale_2 is None:
        return {}
    if getattr(pipe.config, "boundary_ratio", None) is None or getattr(pipe, "transformer_2", None) is None:
        raise InputError(
            f"guidance_scale_2 is set but model {model_name or EMBEDDED_MODEL} has one transformer: it is for "
            "two-expert models (Wan2.2 VACE-Fun A14B); drop --guidance-scale-2"
        )
    return {"guidance_scale_2": guidance_scale_2}


def execution_device(pipe) -> torch.device:
    """Where the pipeline computes (its weights may live in host memory under offloading)."""
    return torch.device(pipe._execution_device)


def _check_wan_vace_folder(path: Path) -> None:
    index = path / "model_index.json"
    if not path.is_dir() or not index.is_file():
        raise InputError(f"{path} is not a diffusers pipeline folder (no model_index.json); pass a Wan-VACE folder")
    try:
        info = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{index} is not valid JSON; re-download or re-save the pipeline") from exc
    cls = info.get("_class_name")
    transformer = info.get("transformer") or [None, None]
    if cls != "WanVACEPipeline" and transformer[1] != "WanVACETransformer3DModel":
        raise InputError(
            f"{path} holds a {cls or 'unknown'} pipeline, not a Wan-VACE one; pass a Wan2.1-VACE folder "
            "(e.g. Wan-AI/Wan2.1-VACE-1.3B-diffusers)"
        )


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~"))


def _cached_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError) as exc:
        raise InputError(
            f"model {repo_id!r} is not in the local Hugging Face cache; download it first "
            f"(`hf download {repo_id}`) or pass a local folder"
        ) from exc
    _check_wan_vace_folder(path)
    return path


class PipelinePool:
    """Loaded pipelines keyed by (model, device, dtype), so a batch loads each model once."""

    def __init__(self) -> None:
        self._pipes: dict[tuple, tuple] = {}

    def get(self, model: str | None, device: str, dtype: str, offload: str = "none"):
        """(pipeline, model info dict) for a spec's model/device/dtype/offload strings."""
        ref = resolve_model(model)
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        key = (str(ref.path.resolve()), str(dev), str(dt), offload)
        if key not in self._pipes:
            pipe = load_pipeline(ref, dev, dt, offload)
            info = {
                "name": ref.name,
                "path": str(ref.path),
                "device": str(dev),
                "dtype": str(dt).removeprefix("torch."),
                "offload": offload,
                "transformer": {k: v for k, v in pipe.transformer.config.items() if not k.startswith("_")},
            }
            if getattr(pipe, "transformer_2", None) is not None:
                info["transformer_2"] = {k: v for k, v in pipe.transformer_2.config.items() if not k.startswith("_")}
                info["boundary_ratio"] = pipe.config.boundary_ratio
            self._pipes[key] = (pipe, info)
        return self._pipes[key]
