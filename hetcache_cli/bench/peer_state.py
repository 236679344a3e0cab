"""What a peer cache leaves behind on a pipeline, and putting it back.

Third-party caches patch instances and classes: diffusers registers hooks (a `_diffusers_hook`
registry per module), cache-dit replaces `forward` of the transformer and of every block and
wraps the pipeline class's `__call__`. A snapshot taken before `attach` lists every instance
attribute of the pipeline and of every transformer module (and the class attributes of the
pipeline and transformer classes); after the peer's own `detach`, `leftovers()` names what it
did not undo and `restore()` undoes it, so that the next method runs on the pipeline as loaded.
"""

from __future__ import annotations

import torch

_MISSING = object()
_CLASS_KEYS = ("__call__", "forward", "_original_call", "_is_cached", "_is_patched")


class PipelineSnapshot:
    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self._objects = [("pipeline", pipe)]
        transformer = getattr(pipe, "transformer", None)
        if transformer is not None:
            self._objects += [(f"transformer.{n}" if n else "transformer", m) for n, m in transformer.named_modules()]
        self._attrs = {id(obj): dict(vars(obj)) for _, obj in self._objects}
        self._modules = {id(obj): dict(obj._modules) for _, obj in self._objects if isinstance(obj, torch.nn.Module)}
        self._classes = [type(pipe)] + ([type(transformer)] if transformer is not None else [])
        self._class_attrs = {cls: {k: cls.__dict__.get(k, _MISSING) for k in _CLASS_KEYS} for cls in self._classes}

    def leftovers(self) -> list[str]:
        """Attributes added, replaced or removed since the snapshot.

        Not counted: diffusers' emptied hook registries, and attributes equal to the class's (diffusers
        leaves each formerly hooked module's `forward` as an instance attribute bound to the class method).
        """
        out = []
        for name, obj in self._objects:
            before, now = self._attrs[id(obj)], vars(obj)
            for key in sorted(set(before) | set(now)):
                old, new = before.get(key, _MISSING), now.get(key, _MISSING)
                if old is new or (key == "_diffusers_hook" and old is _MISSING and not _hooks(new)):
                    continue
                if key == "_diffusers_hook" and _hooks(new) == _hooks(old):
                    continue
                if old is _MISSING and _same_as_class(obj, key, new):
                    continue
                if obj is self.pipe and old is not _MISSING and not callable(old) and not callable(new):
                    continue  # the pipeline's own run state (`_current_timestep` after a call that raised)
                out.append(f"{name}.{key} {'added' if old is _MISSING else 'removed' if new is _MISSING else 'replaced'}")
            if isinstance(obj, torch.nn.Module):
                for key, module in self._modules[id(obj)].items():
                    if obj._modules.get(key) is not module:
                        out.append(f"{name}.{key} (submodule) replaced")
        for cls, attrs in self._class_attrs.items():
            for key, old in attrs.items():
                if cls.__dict__.get(key, _MISSING) is not old:
                    out.append(f"class {cls.__name__}.{key} changed")
        return out

    def restore(self) -> None:
        """Put every attribute, submodule and patched class attribute back as it was."""
        for cls, attrs in self._class_attrs.items():
            for key, old in attrs.items():
                if cls.__dict__.get(key, _MISSING) is old:
                    continue
                if old is _MISSING:
                    delattr(cls, key)
                else:
                    setattr(cls, key, old)
        for _, obj in self._objects:
            before, now = self._attrs[id(obj)], vars(obj)
            for key in set(now) - set(before):
                del now[key]
            for key, value in before.items():
                if now.get(key, _MISSING) is not value:
                    now[key] = value
            if isinstance(obj, torch.nn.Module):
                obj._modules.clear()
                obj._modules.update(self._modules[id(obj)])


def _same_as_class(obj, key: str, value) -> bool:
    """An instance attribute that behaves as the class's: the class method bound again, or the class's None."""
    default = getattr(type(obj), key, _MISSING)
    if default is None:
        return value is None
    return getattr(value, "__self__", None) is obj and getattr(value, "__func__", None) is default


def _hooks(registry) -> tuple:
    if registry is _MISSING or registry is None:
        return ()
    return tuple(getattr(registry, "hooks", {}).keys())


def hooks_left(pipe) -> list[str]:
    """Names of modules of the pipeline's transformer that still carry diffusers hooks or torch hooks."""
    out = []
    for name, module in pipe.transformer.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.hooks:
            out.append(f"{name or 'transformer'}: diffusers hooks {sorted(registry.hooks)}")
        if module._forward_hooks or module._forward_pre_hooks:
            out.append(f"{name or 'transformer'}: torch forward hooks")
        if "forward" in vars(module) and registry is None:
            out.append(f"{name or 'transformer'}: forward replaced")
    return out
