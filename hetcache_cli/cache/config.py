"""HetCache settings: the one home of every cache default (no torch import here).

Precedence everywhere: CLI flag > YAML spec `cache:` section > preset > these defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

METHODS = ("none", "teacache", "hetcache")
PRESETS = ("quality", "balanced", "fast")
SELECTIONS = ("attention", "uniform")
CACHE_DTYPES = ("auto", "float32", "float16", "bfloat16", "float8_e4m3fn")
CACHE_DEVICES = ("auto", "cuda", "cpu")
ON_OVERFLOW = ("error", "teacache")
FORECASTS = ("auto", "none", "residual", "linear")
SCHEDULE_LETTERS = "FPR"


@dataclass
class HetCacheConfig:
    r"""
    Configuration for HetCache on a Wan-VACE transformer.

    Args:
        method (`str`, defaults to `"hetcache"`):
            `none` runs every step in full (the uncached reference), `teacache` makes each step FULL or REUSE,
            `hetcache` makes each step FULL, PARTIAL or REUSE.
        schedule (`str`, *optional*):
            An explicit schedule, one letter per denoising step: `F` full, `P` partial, `R` reuse
            (e.g. `FFPPRPPRPF`). Overrides the automatic schedule; its length must equal the number of steps.
        reuse_threshold (`float`, defaults to `0.055`):
            A step is REUSE while the change accumulated since the last computed (FULL or PARTIAL) step stays
            below this. A step's change is the relative L1 change of the timestep modulation, normalised so the
            changes sum to 1 over the run: a threshold is a fraction of the run's total change (see
            `cache/schedule.py`). Larger = more reuse = faster.
        full_threshold (`float`, defaults to `0.11`):
            A step is FULL once the change accumulated since the last FULL step reaches this, otherwise PARTIAL
            (or REUSE, above). Larger = fewer full steps = faster. Must be >= `reuse_threshold`.
        rescale (`list[float]`, *optional*):
            Polynomial coefficients (highest power first) applied to each step's relative change before it is
            normalised and accumulated (TeaCache-style, fitted per model). None uses the raw change.
        warmup_steps (`int`, defaults to `1`):
            The first `warmup_steps` scheduler steps are always FULL.
        max_partial_run (`int`, defaults to `100`):
            At most this many consecutive non-FULL steps; the next one is forced FULL (cache refresh).
        max_full_run (`int`, defaults to `100`):
            At most this many consecutive FULL steps that the threshold chose (not the forced ones: first,
            warm-up, last, refresh); the next such step is PARTIAL instead. With a small `full_threshold`
            every late step is FULL; `max_full_run` 1 or 3 puts a PARTIAL step between them (`hetcache` only).
        margin_tokens (`int`, defaults to `1`):
            Width, in tokens, of the band around the generative tokens that forms the margin class.
        margin_temporal (`bool`, defaults to `True`):
            The margin also covers tokens one latent frame before and after a generative token.
        margin_ratio (`float`, defaults to `0.25`):
            Fraction of margin tokens recomputed on PARTIAL steps, chosen spatially uniform.
        context_ratio (`float`, defaults to `0.05`):
            Fraction of context tokens recomputed on PARTIAL steps, chosen at the last FULL step.
        selection (`str`, defaults to `"attention"`):
            How context tokens are chosen: `attention` (attention mass from generative queries plus k-means
            diversity) or `uniform` (a spatially uniform subset).
        score_layer (`int`, defaults to `-1`):
            Main block whose self-attention scores the context tokens: -1 = the middle block
            (`num_layers // 2`), otherwise a block index.
        kmeans_clusters (`int`, defaults to `8`):
            Number of k-means clusters over context hidden states for diverse selection (0 disables it).
        kmeans_iters (`int`, defaults to `4`):
            k-means iterations per FULL step (warm-started from the previous centroids).
        forecast (`str`, defaults to `"auto"`):
            What a token that is not computed takes as its residual: `none` the cached one (from its last
            computed step); `residual` that residual extrapolated along the line through its last two computed
            values (per token, against the timestep; exact for residuals linear in t; one more residual-sized
            tensor per branch); `linear` that, and PARTIAL steps attend to each layer's K/V extrapolated from the
            last two FULL steps (float K/V on the device only: 4-bit slopes of the 80% of each layer's tokens that moved
            most, under a quarter of the K/V caches in bfloat16). `auto` = `linear`
            for `hetcache`, `none` for `teacache` (the classic baseline).
        cache_dtype (`str`, defaults to `"auto"`):
            Dtype of the per-layer K/V and residual caches; `auto` uses the transformer's dtype. `float8_e4m3fn`
            stores K/V in 8 bits with one scale per layer and head (dequantised when read; the residual stays in
            the transformer's dtype): about a quarter of float32's K/V memory, half of bfloat16's.
        cache_device (`str`, defaults to `"auto"`):
            Where the K/V caches live: `cuda` on the GPU the model runs on, `cpu` in host memory (pinned on
            CUDA; each layer is copied in while the previous one computes), `auto` on the GPU when they fit in
            its free memory at the start of the run, else in host memory. On a CPU run all are host memory.
        text_kv (`bool`, defaults to `True`):
            Compute the cross-attention K/V of the prompt once per run and guidance branch (at the first step)
            and reuse them: exact, the prompt never changes during a run.
        max_cache_memory (`str`, *optional*):
            Upper bound for the cache memory, e.g. `"8GiB"` or `"512MiB"`. None = no bound.
        on_cache_overflow (`str`, defaults to `"error"`):
            What happens when the caches would exceed `max_cache_memory`: `error` stops before the run,
            `teacache` falls back to whole-step reuse (no per-layer caches) and says so.
        use_triton (`bool`, *optional*):
            Token gather/scatter backend: None = Triton on CUDA when available, True = require Triton,
            False = plain torch.
    """

    method: str = "hetcache"
    schedule: str | None = None
    reuse_threshold: float = 0.055
    full_threshold: float = 0.11
    rescale: list[float] | None = None
    warmup_steps: int = 1
    max_partial_run: int = 100
    max_full_run: int = 100
    margin_tokens: int = 1
    margin_temporal: bool = True
    margin_ratio: float = 0.25
    context_ratio: float = 0.05
    selection: str = "attention"
    score_layer: int = -1
    kmeans_clusters: int = 8
    kmeans_iters: int = 4
    forecast: str = "auto"
    cache_dtype: str = "auto"
    cache_device: str = "auto"
    text_kv: bool = True
    max_cache_memory: str | int | None = None
    on_cache_overflow: str = "error"
    use_triton: bool | None = None
    preset: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError with a one-line message naming the bad field and the fix."""
        _choice("method", self.method, METHODS)
        _choice("selection", self.selection, SELECTIONS)
        _choice("cache_dtype", self.cache_dtype, CACHE_DTYPES)
        _choice("cache_device", self.cache_device, CACHE_DEVICES)
        _choice("on_cache_overflow", self.on_cache_overflow, ON_OVERFLOW)
        _choice("forecast", self.forecast, FORECASTS)
        if self.preset is not None:
            _choice("preset", self.preset, PRESETS)
        if self.schedule is not None:
            schedule = self.schedule.strip().upper()
            bad = sorted(set(schedule) - set(SCHEDULE_LETTERS))
            if not schedule or bad:
                raise ValueError(
                    f"cache schedule {self.schedule!r} has invalid letters {bad}: use one letter per step, "
                    "F (full), P (partial) or R (reuse), e.g. 'FFPPRPPRPF'"
                )
            if schedule[0] != "F":
                raise ValueError(
                    f"cache schedule {self.schedule!r} starts with {schedule[0]!r}: the first step must be F, "
                    "nothing is cached before the first full step"
                )
            if self.method == "teacache" and "P" in schedule:
                raise ValueError("cache schedule has P steps but method is teacache: use only F and R, or method hetcache")
            self.schedule = schedule
        for name in ("reuse_threshold", "full_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)}: use a value >= 0")
        if self.full_threshold < self.reuse_threshold:
            raise ValueError(
                f"full_threshold {self.full_threshold} is below reuse_threshold {self.reuse_threshold}: "
                "use full_threshold >= reuse_threshold"
            )
        for name in ("margin_ratio", "context_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is {value}: use a fraction between 0 and 1")
        if self.score_layer < -1:
            raise ValueError(f"score_layer is {self.score_layer}: use -1 (the middle block) or a block index >= 0")
        for name in ("warmup_steps", "max_partial_run", "margin_tokens", "kmeans_clusters", "kmeans_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)}: use an integer >= 0")
        if self.max_full_run < 1:
            raise ValueError(f"max_full_run is {self.max_full_run}: use an integer >= 1 (100 = no limit)")
        if self.max_cache_memory is not None:
            parse_bytes(self.max_cache_memory)
        if self.rescale is not None and not (
            isinstance(self.rescale, (list, tuple))
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in self.rescale)
        ):
            raise ValueError(
                f"rescale {self.rescale!r} is not a list of numbers: give the polynomial's coefficients, "
                "highest power first (e.g. [2.0, 0.0]), or leave it out"
            )

    @property
    def max_cache_memory_bytes(self) -> int | None:
        return None if self.max_cache_memory is None else parse_bytes(self.max_cache_memory)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(HetCacheConfig)]


def preset_overrides(name: str, presets_dir: Path | None = None) -> dict:
    """The settings a preset changes, read from `configs/presets/<name>.yaml`."""
    from hetcache_cli.resources import configs_dir

    _choice("preset", name, PRESETS)
    path = (presets_dir or configs_dir() / "presets") / f"{name}.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(data) - set(config_fields()))
    if unknown:
        raise ValueError(f"preset file {path.name} has unknown keys {unknown}; valid keys: {config_fields()}")
    return data


def build_config(overrides: dict | None = None, preset: str | None = None) -> HetCacheConfig:
    """Defaults, then the preset's values, then `overrides` (None values are ignored)."""
    values: dict = {}
    if preset is not None:
        values.update(preset_overrides(preset))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    unknown = sorted(set(values) - set(config_fields()))
    if unknown:
        raise ValueError(f"unknown cache settings {unknown}; valid keys: {config_fields()}")
    return HetCacheConfig(preset=preset, **{k: v for k, v in values.items() if k != "preset"})


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: str | int) -> int:
    """'8GiB' -> 8589934592; plain integers are bytes."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):] or "b"
    if unit not in _UNITS or not number:
        raise ValueError(f"max_cache_memory {value!r} is not a size: write e.g. '8GiB', '512MiB' or a number of bytes")
    return int(float(number) * _UNITS[unit])


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not valid: choose one of {', '.join(map(str, choices))}")
