"""`hetcache selftest`: will this machine work? Versions, kernels against references, the demo edit."""

from __future__ import annotations

import re
from typing import Annotated, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import EXIT_FAILURE, handle_errors, print_json, setup_logging, stderr, stdout
from hetcache_cli.errors import InputError

EPILOG = """
Examples:

  hetcache selftest

  hetcache selftest --device cuda --json > selftest.json

  hetcache selftest --device cpu --quick

  hetcache selftest --device cpu --quick --dtype bfloat16   # the dtype a CUDA run gets, rehearsed on the CPU

  TRITON_INTERPRET=1 hetcache selftest --device cpu --quick
"""

SelftestDevice = Annotated[
    Optional[str], typer.Option("--device", help="auto | cuda | cpu (or cuda:N) [default: auto].", show_default=False)
]
SelftestDtype = Annotated[
    Optional[str],
    typer.Option(
        "--dtype", show_default=False,
        help="Dtype of the demo edits: auto | float32 | float16 | bfloat16 [default: auto = bfloat16 on CUDA, float32 on CPU].",
    ),
]  # fmt: skip
Quick = Annotated[bool, typer.Option("--quick", help="Fewer demo steps and frames, no warm-up: seconds on a CPU.")]

_STYLE = {"PASS": "green", "FAIL": "bold red", "SKIP": "yellow"}


def _device(value: str | None):
    value = value or "auto"
    if value not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", value):
        raise InputError(f"--device {value!r} is not valid: use auto, cuda or cpu")
    from hetcache_cli.pipeline.model import resolve_device

    dev = resolve_device(value)
    if dev.type == "cuda" and dev.index is not None:
        import torch

        if dev.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise InputError(f"--device {value} does not exist: this machine has {count} CUDA devices; use cuda:0")
    return dev


def _dtype(value: str | None, dev) -> str:
    """The demo edits' dtype by name; `auto` is what `hetcache edit` gives this device."""
    from hetcache_cli.spec.schema import DTYPES

    value = value or "auto"
    if value not in DTYPES:
        raise InputError(f"--dtype {value!r} is not valid: use {', '.join(DTYPES)}")
    from hetcache_cli.pipeline.model import resolve_dtype

    return str(resolve_dtype(value, dev)).removeprefix("torch.")


def _environment_table(env: dict):
    from rich.table import Table
    from rich.text import Text

    t = env["torch"]
    gpu = t["gpu"] or {"error": "-"}
    gpu_text = gpu.get("error") or f"{gpu['name']}, {gpu['total_memory_bytes'] / 2**30:.1f} GiB, sm {gpu['capability']}"
    triton, ffmpeg, attn = env["triton"], env["ffmpeg"], env["attention_backends"]
    rows = [
        ("python", f"{env['python']['version']} ({env['python']['executable']})"),
        ("torch", f"{t['version']}, CUDA {t['cuda'] or '-'}, cuDNN {t['cudnn'] or '-'}"),
        ("gpu", gpu_text),
        ("diffusers / transformers", f"{env['diffusers']} / {env['transformers']}"),
        ("triton", f"{triton['version'] or 'not installed'}, mode {triton['mode']}: {triton['reason']}"),
        ("ffmpeg", f"{ffmpeg['version']} ({ffmpeg['path']})" if ffmpeg.get("path") else ffmpeg.get("error", "-")),
        ("attention", f"active {attn.get('active')}; usable: {', '.join(attn.get('usable', [])) or '-'}"),
    ]
    run = env["selftest"]
    table = Table(title=f"hetcache {env['hetcache']} selftest on {run['device']}, {run['dtype']}", title_justify="left")
    table.add_column("component")
    table.add_column("version / capability")
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


def _checks_table(checks):
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for name, justify in (("check", "left"), ("status", "left"), ("detail", "left"), ("s", "right")):
        table.add_column(name, justify=justify)
    for c in checks:
        table.add_row(Text(c.name), Text(c.status, style=_STYLE[c.status]), Text(c.detail), f"{c.seconds:.1f}")
    return table


@handle_errors
def selftest(
    device: SelftestDevice = None, dtype: SelftestDtype = None, json_out: opt.Json = False, quick: Quick = False
) -> None:
    """Check that this machine can run hetcache: versions, kernels, the demo edit (exit 1 if any check FAILs)."""
    setup_logging(quiet=True)
    dev = _device(device)
    dtype_name = _dtype(dtype, dev)
    from hetcache_cli.selftest.checks import run_selftest

    def on_start(name: str) -> None:
        stderr.print(f"checking {name} ...", highlight=False)

    report = run_selftest(dev, quick, on_start=on_start, dtype=dtype_name)
    failed = [c.name for c in report.checks if c.status == "FAIL"]
    if json_out:
        print_json(report.to_dict())
    else:
        stdout.print(_environment_table(report.environment))
        stdout.print(_checks_table(report.checks))
        counts = {s: sum(c.status == s for c in report.checks) for s in ("PASS", "FAIL", "SKIP")}
        tally = f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped"
        verdict = f"FAILED ({', '.join(failed)})" if failed else f"this machine works (demo edits in {dtype_name})"
        stdout.print(f"selftest: {tally}: {verdict}", highlight=False)
    if failed:
        raise typer.Exit(EXIT_FAILURE)
