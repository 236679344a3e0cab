"""The caches a user would pick instead of HetCache, as `hetcache bench` methods.

One adapter per peer, each with `attach(pipe, steps)` / `detach(pipe)`, on the pipeline the
bench already loaded (same clip, seed and edit settings as ours). `--methods` names them
`LIBRARY:NAME[=VALUE]`, VALUE being the peer's main knob:

| method | what attaches | VALUE |
|---|---|---|
| `diffusers:fbcache` | `transformer.enable_cache(FirstBlockCacheConfig)` | threshold (0.05) |
| `diffusers:magcache` | `MagCacheConfig`, its `mag_ratios` calibrated by one uncached run first | threshold (0.06) |
| `diffusers:taylorseer` | `TaylorSeerCacheConfig` on the blocks' attention | cache_interval (5) |
| `diffusers:seacache` | `SeaCacheConfig` | threshold (0.25) |
| `diffusers:pab` | `PyramidAttentionBroadcastConfig` (spatial attention) | block skip range (2) |
| `diffusers:fastercache` | `FasterCacheConfig` | spatial block skip range (2) |
| `cache-dit:dbcache` | `cache_dit.enable_cache(pipe, DBCacheConfig)` | residual_diff_threshold (0.08) |
| `cache-dit:dbcache+taylorseer` | the same with `TaylorSeerCalibratorConfig(taylorseer_order=1)` | the same |

Defaults are the libraries' own, except where they cannot fit the run, and each row's
`settings` says what was used: diffusers' TaylorSeer default module patterns (`^blocks.*attn`,
matched with `re.fullmatch`) match no Wan module (they are named `blocks.N.attn1` / `attn2`),
so the adapter passes `^blocks\\.\\d+\\.attn[12]$`; cache-dit's 8 `Fn_compute_blocks` and 8
warm-up steps are kept on models of >= 16 blocks and runs of >= 24 steps, and scaled down
(a quarter of the blocks / steps, at least 1) below that.

Known behaviour on Wan-VACE (evidence in docs/benchmarks.md): FirstBlockCache and MagCache add the
VACE hints twice when they skip (`vace_check` shows it on every bench); SeaCache runs fail-open
(`WanVACEPipeline` enters `cache_context` without the step index it needs); FasterCache raises;
PyramidAttentionBroadcast keeps one state for both guidance branches, so with guidance > 1 the
"uncond" pass reuses the "cond" pass's attention; cache-dit leaves its patched forwards behind
after `disable_cache` (the bench restores them).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import logging
import sys
from typing import Callable

logger = logging.getLogger(__name__)

EXTRA = "pip install -e '.[peers]'"


class Peer:
    library = "diffusers"
    name = ""
    knob = "threshold"
    default: float | None = None
    package = "diffusers"

    def __init__(self, value: float | None = None) -> None:
        self.value = self.default if value is None else value
        self.settings: dict = {}
        self.notes: list[str] = []

    @property
    def family(self) -> str:
        return f"{self.library}:{self.name}"

    @property
    def label(self) -> str:
        return self.family if self.value == self.default else f"{self.family}={self.value:g}"

    def missing(self) -> str | None:
        """None when the peer can run here, else why not (with the fix)."""
        if not installed(self.package):
            return f"not installed: {self.package} ({EXTRA})"
        return None

    def prepare(self, pipe, steps: int, run_once: Callable[[], None], shared: dict) -> None:
        """Anything the peer needs from a run before it can attach (MagCache's ratios); `shared` lives for one bench."""

    def attach(self, pipe, steps: int) -> None:
        raise NotImplementedError

    def detach(self, pipe) -> None:
        raise NotImplementedError

    def check_hints(self, transformer):
        """`vace_check.check_hints` with this peer set to skip the second of two calls; None if not checkable."""
        return None


class _DiffusersPeer(Peer):
    def config(self, pipe, steps: int):
        raise NotImplementedError

    def probe_config(self):
        """A config under which the second of two identical bare-transformer calls may skip work."""
        return None

    def check_hints(self, transformer):
        from hetcache_cli.bench.vace_check import check_hints

        config = self.probe_config()
        if config is None:
            return None
        with capture_logs("diffusers.hooks"):
            return check_hints(transformer, lambda t: t.enable_cache(config), lambda t: t.disable_cache())

    def attach(self, pipe, steps: int) -> None:
        config = self.config(pipe, steps)
        self.settings = {k: _plain(v) for k, v in vars(config).items() if not callable(v)}
        pipe.transformer.enable_cache(config)

    def detach(self, pipe) -> None:
        if getattr(pipe.transformer, "_cache_config", None) is not None:
            pipe.transformer.disable_cache()


class FirstBlockCache(_DiffusersPeer):
    name, default = "fbcache", 0.05

    def config(self, pipe, steps):
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=self.value)

    def probe_config(self):
        return self.config(None, 2)


class MagCache(_DiffusersPeer):
    name, default = "magcache", 0.06

    def __init__(self, value=None) -> None:
        super().__init__(value)
        self.ratios: list[float] | None = None

    def prepare(self, pipe, steps, run_once, shared) -> None:
        """One uncached run with `calibrate=True`; the ratios diffusers logs become `mag_ratios` (once per bench)."""
        note = "mag_ratios calibrated by an uncached run of this clip (the cond branch's)"
        self.ratios = shared.get("magcache_ratios", self.ratios)
        if self.ratios is not None and len(self.ratios) == steps:
            if note not in self.notes:
                self.notes.append(note)
            return
        from diffusers import MagCacheConfig

        found: list[list[float]] = []
        with capture_logs("diffusers.hooks.mag_cache", logging.INFO) as records:
            pipe.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=steps))
            try:
                run_once()
            finally:
                pipe.transformer.disable_cache()
        for record in records:
            text = record.getMessage()
            if "Calibration Results:" in text:
                found.append([float(v) for v in ast.literal_eval(text.split(":", 1)[1].strip())])
        if not found:
            raise RuntimeError("MagCache calibration logged no ratios; is this diffusers' MagCache?")
        self.ratios = shared["magcache_ratios"] = found[0]  # the "cond" branch: diffusers takes one list for both
        self.notes.append(note)

    def config(self, pipe, steps):
        from diffusers import MagCacheConfig

        return MagCacheConfig(threshold=self.value, num_inference_steps=steps, mag_ratios=self.ratios)

    def probe_config(self):
        from diffusers import MagCacheConfig

        return MagCacheConfig(threshold=self.value, num_inference_steps=2, mag_ratios=[1.0, 1.0], retention_ratio=0.0)


WAN_ATTENTION = r"^blocks\.\d+\.attn[12]$"


class TaylorSeer(_DiffusersPeer):
    name, knob, default = "taylorseer", "cache_interval", 5

    def config(self, pipe, steps):
        from diffusers import TaylorSeerCacheConfig

        return TaylorSeerCacheConfig(cache_interval=int(self.value), cache_identifiers=[WAN_ATTENTION])

    def probe_config(self):
        import torch
        from diffusers import TaylorSeerCacheConfig

        # float32 factors: the check is about what is skipped, not the bfloat16 rounding of the default
        return TaylorSeerCacheConfig(
            cache_interval=2, disable_cache_before_step=1, cache_identifiers=[WAN_ATTENTION], taylor_factors_dtype=torch.float32
        )


class SeaCache(_DiffusersPeer):
    name, default = "seacache", 0.25

    def config(self, pipe, steps):
        from diffusers import SeaCacheConfig

        return SeaCacheConfig(threshold=self.value)


class PyramidAttentionBroadcast(_DiffusersPeer):
    name, knob, default = "pab", "spatial_attention_block_skip_range", 2

    def config(self, pipe, steps):
        from diffusers import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=int(self.value), current_timestep_callback=lambda: pipe.current_timestep
        )

    def probe_config(self):
        from diffusers import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2, current_timestep_callback=lambda: 500)


class FasterCache(_DiffusersPeer):
    name, knob, default = "fastercache", "spatial_attention_block_skip_range", 2

    def config(self, pipe, steps):
        from diffusers import FasterCacheConfig

        return FasterCacheConfig(
            spatial_attention_block_skip_range=int(self.value), current_timestep_callback=lambda: pipe.current_timestep
        )


class DBCache(Peer):
    library, name, knob, default, package = "cache-dit", "dbcache", "residual_diff_threshold", 0.08, "cache_dit"
    taylorseer = False

    def attach(self, pipe, steps: int) -> None:
        cache_dit = _import_cache_dit()
        layers = len(pipe.transformer.blocks)
        config = cache_dit.DBCacheConfig(
            residual_diff_threshold=self.value,
            Fn_compute_blocks=8 if layers >= 16 else max(1, layers // 4),
            Bn_compute_blocks=0,
            max_warmup_steps=8 if steps >= 24 else max(1, steps // 4),
            num_inference_steps=steps,
        )
        kwargs = {"cache_config": config}
        self.settings = {k: _plain(getattr(config, k)) for k in (
            "residual_diff_threshold", "Fn_compute_blocks", "Bn_compute_blocks", "max_warmup_steps",
            "num_inference_steps")}  # fmt: skip
        if self.taylorseer:
            kwargs["calibrator_config"] = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1)
            self.settings["calibrator"] = "taylorseer order 1"
        with contextlib.redirect_stdout(sys.stderr):
            cache_dit.enable_cache(pipe, **kwargs)

    def detach(self, pipe) -> None:
        cache_dit = _import_cache_dit()
        with contextlib.redirect_stdout(sys.stderr):
            cache_dit.disable_cache(pipe)

    def check_hints(self, transformer):
        # cache-dit on a bare transformer: its Wan block adapter, without the CFG pairing of calls
        from cache_dit.caching.patch_functors import WanVACEPatchFunctor

        from hetcache_cli.bench.vace_check import check_hints

        cache_dit = _import_cache_dit()

        def attach(t):
            adapter = cache_dit.BlockAdapter(
                transformer=t, blocks=t.blocks, forward_pattern=cache_dit.ForwardPattern.Pattern_2,
                patch_functor=WanVACEPatchFunctor(), has_separate_cfg=False,
            )  # fmt: skip
            config = cache_dit.DBCacheConfig(
                residual_diff_threshold=self.value, Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=0,
                num_inference_steps=2,
            )  # fmt: skip
            calibrator = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1) if self.taylorseer else None
            cache_dit.enable_cache(adapter, cache_config=config, calibrator_config=calibrator)

        with contextlib.redirect_stdout(sys.stderr):
            return check_hints(transformer, attach, cache_dit.disable_cache)


class DBCacheTaylorSeer(DBCache):
    name, taylorseer = "dbcache+taylorseer", True


PEERS: dict[str, type[Peer]] = {
    cls().family: cls
    for cls in (FirstBlockCache, MagCache, TaylorSeer, SeaCache, PyramidAttentionBroadcast, FasterCache, DBCache,
                DBCacheTaylorSeer)
}  # fmt: skip
LIBRARIES = sorted({cls.library for cls in PEERS.values()})


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def parse_peer(text: str) -> Peer:
    """'diffusers:fbcache=0.1' -> a FirstBlockCache adapter with threshold 0.1 (ValueError if unknown)."""
    family, _, value = text.partition("=")
    if family not in PEERS:
        raise ValueError(f"unknown peer {family!r}; peers: {', '.join(PEERS)}")
    if not value:
        return PEERS[family]()
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{text!r}: the value after '=' must be a number (the peer's {PEERS[family].knob})") from None
    if number < 0:
        raise ValueError(f"{text!r}: the value after '=' must be >= 0")
    return PEERS[family](number)


def _import_cache_dit():
    import importlib

    import cache_dit

    handler = getattr(importlib.import_module("cache_dit.logger"), "_default_handler", None)
    if handler is not None and getattr(handler, "stream", None) is not sys.stderr:
        handler.setStream(sys.stderr)  # cache-dit logs to stdout, where our results go
        handler.setLevel(logging.ERROR)
    return cache_dit


@contextlib.contextmanager
def capture_logs(name: str, level: int = logging.WARNING):
    """Records of logger `name` at `level` or above, kept from other handlers; what is printed meanwhile is dropped.

    Peers print (MagCache prints its ratios) and log warnings that say when they do nothing
    (SeaCache's fail-open): the bench shows those in the row instead of on the console.
    """
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    log = logging.getLogger(name)
    handler, old_level, old_propagate = _Keep(level), log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate


def _plain(value):
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
