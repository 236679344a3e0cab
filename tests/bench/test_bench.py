import json

import pytest
from typer.testing import CliRunner

from hetcache_cli.bench.core import Method, parse_methods
from hetcache_cli.cli.app import app
from hetcache_cli.errors import InputError


def test_parse_methods_puts_uncached_first_and_dedups():
    assert parse_methods("hetcache:fast,teacache,none,hetcache:fast") == [
        Method("none"), Method("hetcache", "fast"), Method("teacache")
    ]
    assert parse_methods("hetcache") == [Method("none"), Method("hetcache")]


@pytest.mark.parametrize("text, fragment", [("magic", "unknown method"), ("hetcache:ludicrous", "unknown preset"),
                                            ("none:fast", "takes no preset")])
def test_parse_methods_errors(text, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_methods(text)


def test_bench_end_to_end(small_clip, tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    args = [
        "bench", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
        "--model", tiny_model_dir, "--steps", 8, "--width", 128, "--height", 128,
        "--methods", "none,teacache:fast,hetcache:fast", "--out", out, "--json",
    ]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    rows = {row["method"]: row for row in report["methods"]}
    assert list(rows) == ["none", "teacache:fast", "hetcache:fast"]
    none = rows["none"]
    assert none["speedup"] == pytest.approx(1.0) and none["flops_cut"] == pytest.approx(1.0)
    assert none["quality"]["psnr"]["inside"] == 100.0  # identical to itself (capped)
    for label in ("teacache:fast", "hetcache:fast"):
        row = rows[label]
        assert row["flops_cut"] > 1.0
        assert row["speedup"] > 0 and row["wall_s"] > 0
        assert set(row["quality"]["psnr"]) == {"all", "inside", "margin", "background"}
        assert row["decisions"]["full"] >= 1
    assert rows["hetcache:fast"]["schedule"][0] == "F"
    for name in ("bench.md", "bench.json", "bench.png", "none.mp4", "teacache_fast.mp4", "hetcache_fast.mp4"):
        assert (out / name).is_file(), name
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| hetcache:fast |" in (out / "bench.md").read_text()
