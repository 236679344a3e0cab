"""The methods a bench compares: ours (`none`, `teacache`, `hetcache`, with a preset or explicit settings) and peers.

    none                          the uncached run (always first)
    teacache | hetcache[:PRESET]  ours, with the edit's cache settings and a preset
    teacache+forecast[:PRESET]    teacache's FULL/REUSE steps with hetcache's residual forecast on REUSE steps
                                  (`forecast: residual`): the step-only baseline PARTIAL steps must beat
    LIBRARY:NAME[=VALUE]          a peer cache (`hetcache_cli.bench.peers`), e.g. diffusers:fbcache=0.1
    peers                         every peer at its defaults
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from hetcache_cli.bench.peers import LIBRARIES, PEERS, Peer, parse_peer
from hetcache_cli.cache.config import METHODS, PRESETS
from hetcache_cli.errors import InputError

OURS = "none,teacache,hetcache:quality,hetcache:balanced,hetcache:fast"
FORECAST_REUSE = "teacache+forecast"  # a bench method, not a cache method: teacache with `forecast: residual`
FORECAST_REUSE_SETTINGS = {"method": "teacache", "forecast": "residual"}  # the cache settings it runs with
DEFAULT_METHODS = OURS + ",peers"


@dataclass(frozen=True)
class Method:
    method: str  # none | teacache | teacache+forecast | hetcache | a peer family ("diffusers:fbcache")
    preset: str | None = None
    value: float | None = None  # a peer's knob (its threshold, interval, ...)
    settings: tuple[tuple[str, object], ...] = ()  # explicit cache settings of ours (sweep points)
    base: str | None = None  # the preset a sweep point took its other settings from (for the label)

    @property
    def is_peer(self) -> bool:
        return self.method in PEERS

    @property
    def family(self) -> str:
        """What a line of the plot joins: the method, whatever its preset, settings or value."""
        return self.method

    @property
    def label(self) -> str:
        if self.is_peer:
            return self.peer().label
        if self.settings:
            shown = dict(self.settings)
            parts = [self.base] if self.base else []
            parts += [f"{short}={_short(shown[key])}" for key, short in _LABEL_KEYS if key in shown]
            return f"{self.method}[{' '.join(parts)}]"
        return self.method if self.preset is None else f"{self.method}:{self.preset}"

    @property
    def cache_method(self) -> str:
        """The cache setting's `method` this runs with (`teacache+forecast` is teacache)."""
        return "teacache" if self.method == FORECAST_REUSE else self.method

    def peer(self) -> Peer:
        return PEERS[self.method](self.value)

    @property
    def file_stem(self) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label).strip("_")


def parse_methods(text: str) -> list[Method]:
    """'none,teacache,hetcache:fast,diffusers:fbcache=0.1' -> methods; the uncached run is always first."""
    out: list[Method] = []
    items = [part.strip() for part in text.split(",")]
    for item in [p for i in items for p in (PEERS if i == "peers" else [i])]:
        if not item:
            continue
        m = parse_method(item)
        if m not in out:
            out.append(m)
    return [Method("none")] + [m for m in out if m.method != "none"]


def parse_method(item: str) -> Method:
    head, _, rest = item.partition(":")
    if head in LIBRARIES:
        try:
            peer = parse_peer(item)
        except ValueError as exc:
            raise InputError(f"--methods: {exc}") from None
        return Method(peer.family, value=None if peer.value == peer.default else peer.value)
    ours = (*METHODS, FORECAST_REUSE)
    if head not in ours:
        raise InputError(
            f"--methods: unknown method {head!r}; use {', '.join(ours)} (optionally :PRESET), a peer "
            f"({', '.join(PEERS)}, optionally =VALUE) or peers"
        )
    if rest and rest not in PRESETS:
        raise InputError(f"--methods: unknown preset {rest!r} in {item!r}; use {', '.join(PRESETS)}")
    if head == "none" and rest:
        raise InputError(f"--methods: {item!r}: the uncached run takes no preset; write none")
    return Method(head, rest or None)


def variant(prep, method: Method, out_dir: Path, model: str | None = None):
    """The prepared edit with this method's cache settings (a peer runs with ours off) and its own output files."""
    from hetcache_cli.spec.model_defaults import resolve_cache_config

    if method.method == "none" or method.is_peer:
        overrides: dict = {"method": "none"}
        preset = None
    else:
        overrides = {k: v for k, v in prep.spec.cache.items() if k not in ("method", "preset")}
        overrides.update(method.settings)
        overrides["method"] = method.cache_method
        if method.method == FORECAST_REUSE:
            overrides |= FORECAST_REUSE_SETTINGS
        preset = method.preset
    try:
        cache = resolve_cache_config(overrides, preset, model)
    except ValueError as exc:
        raise InputError(f"{method.label}: {exc}") from exc
    stem = method.file_stem
    return dataclasses.replace(prep, cache=cache, output=out_dir / f"{stem}.mp4", stats_path=out_dir / f"{stem}.stats.json")


_LABEL_KEYS = (("reuse_threshold", "r"), ("full_threshold", "f"), ("max_partial_run", "run"))


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
