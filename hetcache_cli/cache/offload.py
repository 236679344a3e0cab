"""HetCache with diffusers / accelerate offloading: every weight is on the device before it is used.

Offloading moves weights in hooks around a module's forward: `enable_model_cpu_offload` (an
accelerate hook wrapping the transformer's `forward`), `enable_group_offload` /
`apply_group_offloading` (diffusers `HookRegistry` hooks on the transformer, on every block at
block level, on every leaf and every module with direct parameters at leaf level), and
`enable_layerwise_casting` (the same kind of hooks). HetCache replaces the transformer's forward
and calls the blocks' internals, so:

- around each block it runs the block's registry hooks itself (`enter` / `leave`): their
  `pre_forward` outermost first, their `post_forward` innermost first, as the block's own
  forward would; leaves and other submodules are called through their forward, so theirs run;
- on the transformer it keeps its own compute innermost (`attach` / `detach`): under an
  accelerate hook, and at the bottom of the registry chain when offloading hooks were there
  first, so those hooks still wrap every call.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager


def enter(module) -> tuple:
    """Run the `pre_forward` of the module's diffusers hooks; returns them for `leave`."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None or not registry._hook_order:
        return ()
    hooks = tuple(registry.hooks[name] for name in reversed(registry._hook_order))  # outermost first
    for hook in hooks:
        hook.pre_forward(module)
    return hooks


def leave(module, hooks: tuple) -> None:
    for hook in reversed(hooks):
        hook.post_forward(module, None)


def check_blocks(transformer) -> None:
    """Refuse hooks that replace a block's forward (diffusers' own caches): the compact stream bypasses them."""
    for name, module in transformer.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None or module is transformer:
            continue
        for hook_name in registry._hook_order:
            if hasattr(registry.hooks[hook_name], "new_forward"):
                raise ValueError(
                    f"{name} has the diffusers hook {hook_name!r}, which replaces its forward: HetCache cannot run "
                    "with it; disable that cache (transformer.disable_cache()) before applying HetCache"
                )


@contextmanager
def _below_accelerate(module):
    """Make the registry see the forward inside an accelerate hook (model CPU offload), then re-wrap it."""
    outer = module.__dict__.get("forward") if hasattr(module, "_hf_hook") and hasattr(module, "_old_forward") else None
    if outer is None:
        yield
        return
    module.forward = module._old_forward
    try:
        yield
    finally:
        module._old_forward = module.forward
        module.forward = outer


def attach(registry, hook, name: str, outermost: bool = False) -> None:
    """Register `hook` (a `new_forward` hook) so that every other hook on the module still wraps its compute.

    `outermost`: for a hook that only wraps the module's forward chain (method "none", which times
    and counts the forwards of whatever runs inside, another cache's included), register it on top.
    """
    module = registry._module_ref
    for other in registry._hook_order:
        if not outermost and hasattr(registry.hooks[other], "new_forward"):
            raise ValueError(
                f"the transformer has the diffusers hook {other!r}, which replaces its forward: HetCache cannot run "
                "with it; remove it before applying HetCache"
            )
    with _below_accelerate(module):
        registry.register_hook(hook, name)
        refs = registry._fn_refs
        if len(refs) > 1 and not outermost:
            # hooks registered before ours would be skipped by our forward: put our compute at the bottom
            # of the chain, where the module's own forward was, and let our place pass calls through
            ours, bottom = refs[-1], refs[0]
            hook._bottom = (bottom, bottom.forward)
            hook._raw_forward = bottom.forward
            bottom.forward = ours.forward
            ours.forward = ours.original_forward
        else:
            hook._bottom = None
            hook._raw_forward = refs[-1].original_forward
    registry.invalidate_child_registries_cache()


def detach(registry, hook, name: str) -> None:
    """Undo `attach`; the module's forward is what it was, offloading hooks included."""
    module = registry._module_ref
    with _below_accelerate(module):
        if hook._bottom is not None:
            bottom, forward = hook._bottom
            if isinstance(bottom.forward, functools.partial) and bottom.forward.func == hook.new_forward:
                bottom.forward = forward
            hook._bottom = None
        registry.remove_hook(name, recurse=False)
    registry.invalidate_child_registries_cache()
