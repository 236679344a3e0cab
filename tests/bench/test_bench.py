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


def test_teacache_with_the_forecast_is_a_bench_method_of_its_own():
    from hetcache_cli.bench.sweep import FAMILIES

    step_only = Method("teacache+forecast", "fast")
    assert parse_methods("teacache+forecast:fast,teacache") == [Method("none"), step_only, Method("teacache")]
    assert step_only.cache_method == "teacache" and step_only.family == "teacache+forecast"
    assert step_only.label == "teacache+forecast:fast" and Method("hetcache").cache_method == "hetcache"
    assert "teacache+forecast" in FAMILIES


@pytest.mark.parametrize("text, fragment", [("magic", "unknown method"), ("hetcache:ludicrous", "unknown preset"),
                                            ("none:fast", "takes no preset")])
def test_parse_methods_errors(text, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_methods(text)


@pytest.mark.slow
def test_bench_end_to_end(small_clip, tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    args = [
        "bench", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
        "--model", tiny_model_dir, "--steps", 12, "--frames", 5, "--width", 64, "--height", 64,
        "--methods", "none,teacache:fast,teacache+forecast:fast,hetcache:fast", "--out", out, "--json",
    ]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    rows = {row["method"]: row for row in report["methods"]}
    assert list(rows) == ["none", "teacache:fast", "teacache+forecast:fast", "hetcache:fast"]
    # step reuse with the residual forecast: teacache's schedule, the forecast on its REUSE steps
    tea, step_only = rows["teacache:fast"], rows["teacache+forecast:fast"]
    assert step_only["settings"]["method"] == "teacache" and step_only["settings"]["forecast"] == "residual"
    assert tea["settings"]["forecast"] != "residual" and step_only["schedule"] == tea["schedule"]
    assert "R" in tea["schedule"] and step_only["decisions"]["partial"] == 0
    assert step_only["quality"]["psnr"]["all"] != tea["quality"]["psnr"]["all"]  # the forecast changed the REUSE step
    none = rows["none"]
    assert none["speedup"] == pytest.approx(1.0) and none["flops_cut"] == pytest.approx(1.0)
    assert none["quality"]["psnr"]["inside"] == 100.0  # identical to itself (capped)
    assert none["quality"]["psnr"]["visible"] == 100.0
    for label in ("teacache:fast", "hetcache:fast"):
        row = rows[label]
        assert row["flops_cut"] > 1.0
        assert row["speedup"] > 0 and row["wall_s"] > 0
        assert set(row["quality"]["psnr"]) == {"all", "inside", "margin", "background", "visible"}
        assert row["decisions"]["full"] >= 1
    assert rows["hetcache:fast"]["schedule"][0] == "F"
    for name in ("bench.md", "bench.json", "bench.png", "none.mp4", "teacache_fast.mp4", "hetcache_fast.mp4"):
        assert (out / name).is_file(), name
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| hetcache:fast |" in (out / "bench.md").read_text() and "PSNR visible" in (out / "bench.md").read_text()


def test_pareto_front_keeps_the_points_nothing_beats():
    from hetcache_cli.bench.sweep import pareto_front

    points = [(1.0, 60.0), (2.0, 50.0), (1.5, 40.0), (3.0, 45.0), (3.0, 30.0), (2.5, None)]
    front = pareto_front(points, lambda p: p[0], lambda p: p[1])
    assert front == [(1.0, 60.0), (2.0, 50.0), (3.0, 45.0)]


@pytest.mark.slow
def test_bench_sweep_gives_each_method_a_front_and_the_plot(small_clip, tiny_model_dir, tmp_path):
    out = tmp_path / "sweep"
    args = [
        "bench", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
        "--model", tiny_model_dir, "--steps", 8, "--frames", 5, "--width", 64, "--height", 64,
        "--sweep", "--methods", "hetcache,diffusers:fbcache", "--repeat", 0, "--no-warmup", "--out", out, "--json",
    ]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["sweep"] is True
    families = [row["family"] for row in report["methods"]]
    assert families.count("hetcache") >= 3 and families.count("diffusers:fbcache") == 5
    ours = [row for row in report["methods"] if row["family"] == "hetcache"]
    assert len({row["schedule"] for row in ours}) == len(ours)  # one run per distinct schedule
    cuts = [row["flops_cut"] for row in ours]
    assert max(cuts) > 1.5 and not any(row["timed"] for row in report["methods"])  # --repeat 0: counted runs only
    from hetcache_cli.bench.sweep import fronts

    front = fronts(report["methods"])["hetcache"]
    assert front and [row["flops_cut"] for row in front] == sorted(row["flops_cut"] for row in front)
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_report_reads_hetcache_against_step_reuse_with_the_forecast():
    from hetcache_cli.bench.report import step_reuse_lines

    def row(family, cut, visible, status="ok"):
        return {"family": family, "status": status, "flops_cut": cut, "quality": {"psnr": {"visible": visible}}}

    rows = [row("hetcache", 1.5, 60.0), row("hetcache", 3.0, 45.0), row("hetcache", 2.0, 40.0),  # dominated
            row("teacache+forecast", 1.5, 58.0), row("teacache+forecast", 2.5, 50.0),
            row("teacache+forecast", 4.0, 49.0, status="failed"), row("diffusers:fbcache", 2.0, 70.0)]
    lines = step_reuse_lines(rows, cuts=(1.5, 2.0, 3.0))
    assert lines[-3:] == ["| hetcache | 60.0 | 55.0 | 45.0 |", "| teacache+forecast | 58.0 | 54.0 | - |",
                          "| hetcache's lead | +2.0 | +1.0 | - |"]
    assert step_reuse_lines([r for r in rows if r["family"] != "teacache+forecast"]) == []
