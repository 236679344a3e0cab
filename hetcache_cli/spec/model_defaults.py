"""What a model recommends: its `hetcache_defaults.json`, in the model folder or the user config folder (no torch).

Keys of the file (all optional):
- `steps`, `guidance_scale`, `negative_prompt`, `window_frames`, `window_overlap` (`MODEL_DEFAULT_KEYS`):
  defaults below flags and specs, above the built-in ones (the embedded demo model sets guidance 1
  and 17-frame windows);
- `presets`: `{"quality" | "balanced" | "fast": {cache setting: value}}`, written by
  `hetcache calibrate`; `--preset NAME` on this model uses them instead of `configs/presets/`
  (spec `cache:` keys and flags still win over a preset's values);
- `calibration`: what `hetcache calibrate` measured to choose the presets (for people, not read).

Two places, read in this order, the later winning key by key (and preset by preset): the model
folder (a local diffusers folder, or the embedded model's), then the user config folder's
`models/<model key>/hetcache_defaults.json`. The user config folder is `$HETCACHE_CONFIG_DIR`, else
`$XDG_CONFIG_HOME/hetcache`, else `~/.config/hetcache`; the model key is `embedded`, a hub id with
`/` written `--`, or a local folder's absolute path with `/` written `--`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hetcache_cli.resources import EMBEDDED_MODEL, embedded_model_dir
from hetcache_cli.spec.schema import MODEL_DEFAULT_KEYS

MODEL_DEFAULTS_FILE = "hetcache_defaults.json"
FILE_KEYS = (*MODEL_DEFAULT_KEYS, "presets", "calibration")
PRESET_EXCLUDED_KEYS = ("method", "preset", "schedule")  # a preset tunes a cache, it does not pick one


def user_config_dir() -> Path:
    if os.environ.get("HETCACHE_CONFIG_DIR"):
        return Path(os.environ["HETCACHE_CONFIG_DIR"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "hetcache"


def is_local_model(model: str | None) -> bool:
    return model not in (None, EMBEDDED_MODEL) and Path(model).expanduser().exists()


def model_key(model: str | None) -> str:
    if model in (None, EMBEDDED_MODEL):
        return EMBEDDED_MODEL
    if is_local_model(model):
        return str(Path(model).expanduser().resolve()).replace("/", "--")
    return model.replace("/", "--")


def user_defaults_path(model: str | None) -> Path:
    return user_config_dir() / "models" / model_key(model) / MODEL_DEFAULTS_FILE


def folder_defaults_path(model: str | None) -> Path | None:
    """The model folder's file (which may not exist yet); None for a hub id."""
    if model in (None, EMBEDDED_MODEL):
        return embedded_model_dir() / MODEL_DEFAULTS_FILE
    if is_local_model(model):
        return Path(model).expanduser() / MODEL_DEFAULTS_FILE
    return None


def defaults_paths(model: str | None) -> list[Path]:
    """The files that exist for this model, in the order they are applied."""
    paths = [folder_defaults_path(model), user_defaults_path(model)]
    return [p for p in paths if p is not None and p.is_file()]


def read_defaults_file(path: Path) -> dict[str, Any]:
    """One validated file; bad content is an InputError naming the file, the key and the fix."""
    from hetcache_cli.spec.load import SpecError, check_values

    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: not valid JSON ({exc}); fix or delete the file") from exc
    if not isinstance(values, dict):
        raise SpecError(f"{path}: expected an object of defaults, got {type(values).__name__}")
    extra = sorted(set(values) - set(FILE_KEYS))
    if extra:
        raise SpecError(
            f"{path}: unknown keys {extra}; a model folder may set only {', '.join(MODEL_DEFAULT_KEYS)}, "
            "presets and calibration"
        )
    check_values({k: v for k, v in values.items() if k in MODEL_DEFAULT_KEYS}, str(path))
    if "presets" in values:
        _check_presets(values["presets"], path)
    if not isinstance(values.get("calibration", {}), dict):
        raise SpecError(f"{path}: calibration must be an object (what `hetcache calibrate` measured)")
    return values


def model_defaults(model: str | None) -> dict[str, Any]:
    """The defaults (`MODEL_DEFAULT_KEYS`) recommended for `model`, or {}."""
    out: dict[str, Any] = {}
    for path in defaults_paths(model):
        out.update({k: v for k, v in read_defaults_file(path).items() if k in MODEL_DEFAULT_KEYS})
    return out


def model_presets(model: str | None) -> dict[str, dict[str, Any]]:
    """The presets calibrated for `model`, by name ({} when there are none)."""
    out: dict[str, dict[str, Any]] = {}
    for path in defaults_paths(model):
        out.update(read_defaults_file(path).get("presets", {}))
    return out


def resolve_cache_config(values: dict[str, Any], preset: str | None, model: str | None):
    """HetCacheConfig from cache settings and a preset; the model's calibrated preset wins over the shipped one."""
    from hetcache_cli.cache.config import build_config

    calibrated = model_presets(model).get(preset) if preset is not None else None
    if calibrated is None:
        return build_config(values, preset=preset)
    config = build_config({**calibrated, **{k: v for k, v in values.items() if v is not None}})
    config.preset = preset
    return config


def _check_presets(presets: Any, path: Path) -> None:
    from hetcache_cli.cache.config import PRESETS, build_config, config_fields
    from hetcache_cli.spec.load import SpecError, _check_type
    from hetcache_cli.spec.schema import CACHE_FIELD_TYPES

    if not isinstance(presets, dict):
        raise SpecError(f"{path}: presets must be an object {{name: {{setting: value}}}}, got {type(presets).__name__}")
    allowed = [k for k in config_fields() if k not in PRESET_EXCLUDED_KEYS]
    for name, settings in presets.items():
        where = f"{path}: presets.{name}"
        if name not in PRESETS:
            raise SpecError(f"{path}: unknown preset {name!r}; presets are {', '.join(PRESETS)}")
        if not isinstance(settings, dict):
            raise SpecError(f"{where} must be an object of cache settings, got {type(settings).__name__}")
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            raise SpecError(f"{where}: unknown or not allowed keys {unknown}; a preset may set {', '.join(allowed)}")
        for key, value in settings.items():
            _check_type(key, value, CACHE_FIELD_TYPES[key], where)
        try:
            build_config(settings)
        except ValueError as exc:
            raise SpecError(f"{where}: {exc}") from exc
