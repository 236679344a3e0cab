"""Loading and validating edit specs from YAML files and CLI flags (no torch import)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from hetcache_cli.cache.config import PRESETS
from hetcache_cli.errors import InputError
from hetcache_cli.spec.prompts import parse_boxes
from hetcache_cli.spec.schema import (
    CACHE_FIELD_TYPES,
    CROP_MODES,
    DEVICES,
    DTYPES,
    FIELD_TYPES,
    MASK_FILLS,
    MASK_KEYS,
    MODEL_DEFAULT_KEYS,
    OFFLOADS,
    PATH_FIELDS,
    REQUIRED,
    VAE_DECODES,
    EditSpec,
    spec_fields,
)
from hetcache_cli.spec.windows import check_window_settings

# re-exported: the model's recommendations live in their own module
from hetcache_cli.spec.model_defaults import MODEL_DEFAULTS_FILE, model_defaults  # noqa: E402,F401


class SpecError(InputError):
    """A spec file or flag combination that cannot be used."""


def load_spec_file(path: str | Path) -> list[dict[str, Any]]:
    """The edits in a spec file, as validated (not yet complete) dicts with absolute paths.

    A file holds one edit (a mapping of spec keys) or several under `edits:`, optionally with
    `defaults:` shared by all of them.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(f"{path}: not valid YAML ({first}); fix the syntax") from exc
    if data is None:
        raise SpecError(f"{path}: the spec is empty; print a template with `hetcache template`")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of spec keys or `edits:`, got a {type(data).__name__}")

    base = path.resolve().parent
    if "edits" in data:
        extra = sorted(set(data) - {"edits", "defaults"})
        if extra:
            raise SpecError(f"{path}: unknown top-level keys {extra}; a batch file has only `edits:` and `defaults:`")
        edits = data["edits"]
        if not isinstance(edits, list) or not edits:
            raise SpecError(f"{path}: `edits:` must be a non-empty list of edits")
        defaults = data.get("defaults") or {}
        check_values(defaults, f"{path}: defaults")
        out = []
        for i, edit in enumerate(edits):
            where = f"{path}: edits[{i}]"
            if not isinstance(edit, dict):
                raise SpecError(f"{where}: expected a mapping of spec keys, got {edit!r}")
            check_values(edit, where)
            out.append(_resolve_paths(merge_values(defaults, edit), base))
        return out
    check_values(data, str(path))
    return [_resolve_paths(data, base)]


def check_values(values: dict[str, Any], where: str) -> None:
    """Unknown keys and wrong types are errors naming the key and the valid ones."""
    valid = spec_fields()
    for key, value in values.items():
        if key not in FIELD_TYPES:
            raise SpecError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        _check_type(key, value, FIELD_TYPES[key], where)
    if values.get("box") is not None:
        _check_boxes(values["box"], where)
    cache = values.get("cache")
    if cache is not None:
        for key, value in cache.items():
            if key not in CACHE_FIELD_TYPES:
                raise SpecError(
                    f"{where}: unknown cache key {key!r}; valid cache keys: {', '.join(sorted(CACHE_FIELD_TYPES))}"
                )
            _check_type(f"cache.{key}", value, CACHE_FIELD_TYPES[key], where)


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` wins; None values do not override; the `cache` mapping is merged key by key; a `mask` or
    `box` in `override` replaces both of them in `base`."""
    out = dict(base)
    if any(override.get(key) is not None for key in MASK_KEYS):
        for key in MASK_KEYS:  # a mask given here replaces the one below, whichever its kind
            out.pop(key, None)
    for key, value in override.items():
        if value is None:
            continue
        if key == "cache":
            out["cache"] = {**(out.get("cache") or {}), **{k: v for k, v in value.items() if v is not None}}
        else:
            out[key] = value
    return out


def build_spec(values: dict[str, Any], where: str = "edit") -> EditSpec:
    """A complete, validated EditSpec from merged values."""
    check_values(values, where)
    missing = [key for key in REQUIRED if not values.get(key)]
    if missing:
        flags = ", ".join(f"--{k}" if k != "video" else "VIDEO" for k in missing)
        raise SpecError(f"{where}: missing {', '.join(missing)}; give {flags} or set them in the spec")
    given = [key for key in MASK_KEYS if values.get(key)]
    if not given:
        raise SpecError(f"{where}: missing mask; give --mask FILE or --box x0,y0,x1,y1[@FRAME] (spec keys mask:, box:)")
    if len(given) > 1:
        raise SpecError(f"{where}: both mask and box are given; keep one of them")
    spec = EditSpec(**merge_values(model_defaults(values.get("model")), values))
    _check_ranges(spec, where)
    try:
        spec.cache_config()
    except (ValueError, FileNotFoundError) as exc:
        raise SpecError(f"{where}: cache: {exc}") from exc
    return spec


def _check_type(key: str, value: Any, accepted: tuple[type, ...], where: str) -> None:
    if value is None:
        return
    ok = isinstance(value, accepted) and not (isinstance(value, bool) and bool not in accepted)
    if not ok:
        names = " or ".join(t.__name__ for t in accepted)
        raise SpecError(f"{where}: {key} must be {names}, got {value!r} ({type(value).__name__})")


def _check_boxes(value: Any, where: str) -> None:
    items = [value] if isinstance(value, str) else value
    for item in items:
        if not isinstance(item, str):
            raise SpecError(f'{where}: each box is a string such as "40,30,200,180@0", got {item!r}')
    try:
        parse_boxes(items, "box")
    except InputError as exc:
        raise SpecError(f"{where}: {exc}") from None


def _check_ranges(spec: EditSpec, where: str) -> None:
    def fail(msg: str) -> None:
        raise SpecError(f"{where}: {msg}")

    if spec.steps < 1:
        fail(f"steps is {spec.steps}; use at least 1")
    if spec.guidance_scale < 0:
        fail(f"guidance_scale is {spec.guidance_scale}; use a value >= 0 (1 disables guidance)")
    if spec.guidance_scale_2 is not None and spec.guidance_scale_2 < 0:
        fail(f"guidance_scale_2 is {spec.guidance_scale_2}; use a value >= 0, or leave it out to use guidance_scale")
    if not 0.0 <= spec.mask_threshold < 1.0:
        fail(f"mask_threshold is {spec.mask_threshold}; use a value in [0, 1)")
    for name in ("mask_dilation", "paste_dilation", "paste_feather"):
        if getattr(spec, name) < 0:
            fail(f"{name} is {getattr(spec, name)}; use a number of pixels >= 0")
    if not 0 <= spec.crf <= 51:
        fail(f"crf is {spec.crf}; use 0 (lossless) to 51")
    if spec.frames is not None and spec.frames < 1:
        fail(f"frames is {spec.frames}; use a positive count (or leave it out to edit every frame)")
    window_problem = check_window_settings(spec.window_frames, spec.window_overlap)
    if window_problem is not None:
        fail(window_problem)
    if spec.max_area < 32 * 32:
        fail(f"max_area is {spec.max_area}; use at least 1024 pixels")
    if spec.crop not in CROP_MODES:
        fail(f"crop {spec.crop!r} is not valid; use auto (a box around the mask) or full (the whole frame)")
    if not spec.crop_context >= 1.0:
        fail(f"crop_context is {spec.crop_context}; use a factor of 1 or more (e.g. 2: twice the mask's box)")
    if spec.crop_min_size < 32:
        fail(f"crop_min_size is {spec.crop_min_size}; use at least 32 pixels (e.g. 384)")
    if spec.mask_fill not in MASK_FILLS:
        fail(f"mask_fill {spec.mask_fill!r} is not valid; use source (edit what is there) or gray (remove, replace)")
    if spec.vae_decode not in VAE_DECODES:
        fail(f"vae_decode {spec.vae_decode!r} is not valid; use region (what paste-back uses) or full (the whole crop)")
    if spec.device not in DEVICES and not spec.device.startswith("cuda:"):
        fail(f"device {spec.device!r} is not valid; use one of {', '.join(DEVICES)} or cuda:N")
    if spec.dtype not in DTYPES:
        fail(f"dtype {spec.dtype!r} is not valid; use one of {', '.join(DTYPES)}")
    if spec.offload not in OFFLOADS:
        fail(f"offload {spec.offload!r} is not valid; use one of {', '.join(OFFLOADS)}")
    preset = spec.cache.get("preset")
    if preset is not None and preset not in PRESETS:
        fail(f"cache preset {preset!r} is not valid; use one of {', '.join(PRESETS)}")
    if not spec.prompt.strip():
        fail("prompt is empty; say what the masked region should show")


def _resolve_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(values)
    for key in PATH_FIELDS:
        if isinstance(out.get(key), str):
            p = Path(out[key]).expanduser()
            out[key] = os.path.normpath(p if p.is_absolute() else base / p)
    model = out.get("model")
    if isinstance(model, str) and (model.startswith((".", "/", "~")) or (base / model).exists()):
        p = Path(model).expanduser()
        out["model"] = os.path.normpath(p if p.is_absolute() else base / p)
    return out
