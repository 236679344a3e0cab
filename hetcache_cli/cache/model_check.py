"""Cache settings checked against the model before its weights load (no torch import).

What a cache setting means can depend on the model: `score_layer` is a block index, the plan's
cache bytes come from the head count and head size of each transformer's `config.json`, and an
explicit `schedule` has one letter per step. A mistake there must stop the edit in a second with
exit 2, not after minutes of loading with a traceback. The configs are read from the model folder
(a local diffusers folder, the embedded model, or a hub id's snapshot in the local cache); the
weights' width is read from the safetensors header, never from the weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.errors import InputError
from hetcache_cli.resources import EMBEDDED_MODEL, embedded_model_dir

EXPERTS = ("transformer", "transformer_2")
_PLAN_KEYS = ("num_attention_heads", "attention_head_dim", "num_layers", "vace_layers", "ffn_dim", "patch_size")
_WIDTH_KEY = "blocks.0.attn1.to_q.weight"  # [heads x head_dim, dim]: the attention width the weights have


def check_cache_settings(config: HetCacheConfig, model: str | None, steps: int | None = None) -> None:
    """Every cache setting that depends on the run or the model, before the weights load (InputError)."""
    if config.schedule is not None and steps is not None and len(config.schedule) != steps:
        raise InputError(
            f"cache schedule {config.schedule!r} has {len(config.schedule)} letters but the edit has {steps} steps: "
            f"give one letter (F, P or R) per step, or set steps to {len(config.schedule)}"
        )
    folder = model_folder(model)
    if folder is None:
        return  # not found here: loading the model says why
    name = model or EMBEDDED_MODEL
    transformers = read_transformer_configs(folder)
    widths = {expert: weights_width(folder / expert) for expert in transformers}
    check_against_configs(config, transformers, widths, name)


def check_against_configs(
    config: HetCacheConfig, transformers: dict[str, dict], widths: dict[str, int | None], name: str
) -> None:
    """The pure part: `transformers` {expert: config.json}, `widths` {expert: attention width of its weights}."""
    for expert, cfg in transformers.items():
        where = f"model {name} ({expert}/config.json)"
        missing = [k for k in _PLAN_KEYS if k not in cfg]
        if missing:
            raise InputError(f"{where} lacks {', '.join(missing)}: pass a complete diffusers Wan-VACE folder")
        heads, head_dim, layers = cfg["num_attention_heads"], cfg["attention_head_dim"], cfg["num_layers"]
        width = widths.get(expert)
        if width is not None and heads * head_dim != width:
            raise InputError(
                f"{where} has {heads} heads x {head_dim} = {heads * head_dim} but its weights are {width} wide "
                f"({_WIDTH_KEY}): the config does not belong to these weights; restore the model's own config.json"
            )
        outside = [i for i in cfg["vace_layers"] if not 0 <= i < layers]
        if outside:
            raise InputError(
                f"{where} puts VACE blocks at layers {outside}, outside its {layers} blocks; "
                "restore the model's own config.json"
            )
        if config.score_layer != -1 and config.score_layer >= layers:
            raise InputError(
                f"cache score_layer {config.score_layer} is out of range for {name}: {expert} has {layers} blocks; "
                f"use -1 (the middle block) or 0..{layers - 1}"
            )


def model_folder(model: str | None) -> Path | None:
    """The local diffusers folder of `--model` (embedded, a folder, or a hub id's cached snapshot), or None."""
    if model in (None, EMBEDDED_MODEL):
        path = embedded_model_dir()
    elif Path(model).expanduser().exists():
        path = Path(model).expanduser()
    elif model.count("/") == 1 and not model.startswith((".", "~")):
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(model, local_files_only=True))
        except Exception:  # not in the cache, or no hub client: the loader reports it
            return None
    else:
        return None
    return path if (path / "model_index.json").is_file() else None


def read_transformer_configs(folder: Path) -> dict[str, dict]:
    """{expert: its config.json} for the transformers a run uses (`transformer_2` only with a boundary_ratio)."""
    index = _read(folder / "model_index.json")
    out = {}
    for expert in EXPERTS:
        entry = index.get(expert)
        if not entry or entry[0] is None or (expert == "transformer_2" and index.get("boundary_ratio") is None):
            continue
        out[expert] = _read(folder / expert / "config.json")
    return out


def weights_width(sub: Path) -> int | None:
    """The attention width of a transformer's weights from its safetensors header (None when not found)."""
    files = sorted(sub.glob("*.safetensors"))
    index = next(iter(sorted(sub.glob("*.safetensors.index.json"))), None)
    if index is not None:
        shard = _read(index).get("weight_map", {}).get(_WIDTH_KEY)
        files = [sub / shard] if shard else []
    for file in files:
        try:
            with open(file, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
        except (OSError, ValueError, struct.error):
            return None
        if _WIDTH_KEY in header:
            return int(header[_WIDTH_KEY]["shape"][0])
    return None


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}; pass a complete diffusers Wan-VACE folder") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a JSON object; pass a complete diffusers Wan-VACE folder")
    return data
