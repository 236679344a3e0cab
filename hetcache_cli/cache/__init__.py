"""HetCache engine: heterogeneous step and token caching for Wan-VACE (see docs/engine.md)."""

from hetcache_cli.cache.config import HetCacheConfig, build_config
from hetcache_cli.cache.flops import ModelDims, forward_flops

__all__ = [
    "CacheMemoryError",
    "CachePlan",
    "RunSummary",
    "HetCacheConfig",
    "HetCacheHook",
    "ModelDims",
    "StepStats",
    "TokenCounts",
    "apply_hetcache",
    "build_config",
    "describe_run",
    "estimate_cache_memory",
    "estimate_run_flops",
    "forward_flops",
    "get_hetcache",
    "plan_model",
    "plan_run",
    "remove_hetcache",
    "resolve_schedule",
]

_LAZY = {
    "StepStats": "hetcache_cli.cache.stats",
    "TokenCounts": "hetcache_cli.cache.stats",
    "CacheMemoryError": "hetcache_cli.cache.state",
    "estimate_cache_memory": "hetcache_cli.cache.state",
    "HetCacheHook": "hetcache_cli.cache.hook",
    "apply_hetcache": "hetcache_cli.cache.apply",
    "get_hetcache": "hetcache_cli.cache.apply",
    "remove_hetcache": "hetcache_cli.cache.apply",
    "estimate_run_flops": "hetcache_cli.cache.schedule",
    "resolve_schedule": "hetcache_cli.cache.schedule",
    "describe_run": "hetcache_cli.cache.planning",
    "plan_model": "hetcache_cli.cache.planning",
    "plan_run": "hetcache_cli.cache.planning",
    "CachePlan": "hetcache_cli.cache.plan",
    "RunSummary": "hetcache_cli.cache.summary",
}


def __getattr__(name: str):
    # torch and diffusers are imported only when the engine is used, so `hetcache --help` stays fast
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
