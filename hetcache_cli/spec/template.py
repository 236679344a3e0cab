"""A commented YAML template spec, generated from the dataclass docstrings and defaults."""

from __future__ import annotations

import dataclasses
import re

import yaml

from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.spec.schema import MASK_KEYS, MODEL_DEFAULT_KEYS, REQUIRED, EditSpec

_ARG = re.compile(r"^\s{8}(\w+) \(`[^`]*`(?:, [^)]*)?\):\s*(.*)$")


def _arg_docs(cls) -> dict[str, str]:
    docs: dict[str, str] = {}
    current = None
    for line in (cls.__doc__ or "").splitlines():
        m = _ARG.match(line)
        if m:
            current = m.group(1)
            docs[current] = m.group(2).strip()
        elif current and line.startswith(" " * 12) and line.strip():
            docs[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return docs


def _yaml_value(value) -> str:
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _comment(text: str, indent: str) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > 88 - len(indent):
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    return [f"{indent}# {line}" for line in lines]


def render_template() -> str:
    examples = {"video": "input.mp4", "mask": "mask.png", "prompt": "a red ball"}
    out = [
        "# hetcache edit spec. Relative paths resolve against this file's folder.",
        "# Run it with `hetcache edit --spec FILE` or `hetcache run FILE`; flags override these values.",
        "# Several edits in one file: put them in a list under `edits:` (optional shared `defaults:`).",
        "",
    ]
    docs = _arg_docs(EditSpec)
    for f in dataclasses.fields(EditSpec):
        if f.name == "cache":
            continue
        out += _comment(docs.get(f.name, ""), "")
        if f.name in REQUIRED:
            out.append(f"{f.name}: {_yaml_value(examples[f.name])}  # required")
        elif f.name == MASK_KEYS[0]:
            out.append(f"{f.name}: {_yaml_value(examples[f.name])}  # required unless {MASK_KEYS[1]} is given")
        elif f.name in MODEL_DEFAULT_KEYS:
            # left out, so that a model folder's hetcache_defaults.json can recommend its own value
            out.append(f"# {f.name}: {_yaml_value(f.default)}  # unless the model folder recommends another")
        else:
            out.append(f"{f.name}: {_yaml_value(f.default)}")
    out += ["", "# HetCache settings: a preset, then any single setting to override it."]
    out.append("cache:")
    cache_docs = _arg_docs(HetCacheConfig)
    out += _comment("Preset: quality | balanced | fast, or null for the defaults below.", "  ")
    out.append("  preset: null")
    for f in dataclasses.fields(HetCacheConfig):
        if f.name == "preset":
            continue
        out += _comment(cache_docs.get(f.name, ""), "  ")
        out.append(f"  {f.name}: {_yaml_value(f.default)}")
    return "\n".join(out) + "\n"
