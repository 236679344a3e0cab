"""The `--parallel` layout without processes: parsing, the checks against launch and model, Ulysses token
ownership (balance, coverage, fixed shapes), and the CLI's one-line errors before any rank starts."""

import pytest
import torch
from typer.testing import CliRunner

from hetcache_cli.cache.parallel import Layout, Traffic, check_layout, parse_layout
from hetcache_cli.cache.ulysses import ownership, rows_per_rank
from hetcache_cli.cli.app import app


@pytest.mark.parametrize(
    ("text", "layout", "world"),
    [("cfg", Layout(True, 1), 2), ("ulysses=4", Layout(False, 4), 4), ("cfg,ulysses=2", Layout(True, 2), 4),
     (" ulysses=3 , cfg ", Layout(True, 3), 6)],
)  # fmt: skip
def test_parse_layout(text, layout, world):
    assert parse_layout(text) == layout and layout.world_size == world
    assert parse_layout(str(layout)) == layout


@pytest.mark.parametrize("text", ["", "ring=2", "ulysses=1", "ulysses=x", "cfg,cfg", "ulysses=2,ulysses=4", "CFG"])
def test_parse_layout_rejects(text):
    with pytest.raises(ValueError, match="--parallel"):
        parse_layout(text)


def test_check_layout_names_the_fix():
    check_layout(Layout(True, 2), 4, 12, 5.0)
    with pytest.raises(ValueError, match="needs 4 ranks, this launch has 2: start it with torchrun --nproc-per-node 4"):
        check_layout(Layout(True, 2), 2, 12, 5.0)
    fix = r"12 attention heads, which 5 does not divide; use ulysses=2 \| 3 \| 4 \| 6 \| 12"
    with pytest.raises(ValueError, match=fix):
        check_layout(Layout(False, 5), 5, 12, 5.0)
    with pytest.raises(ValueError, match="guidance_scale <= 1 runs only one"):
        check_layout(Layout(True, 1), 2, 12, 1.0)
    with pytest.raises(ValueError, match="guidance_scale <= 1"):
        check_layout(Layout(True, 1), 2, 12, 5.0, guidance_scale_2=1.0)
    check_layout(Layout(False, 2), 2, 12, 1.0)  # Ulysses alone needs no second branch


@pytest.mark.parametrize("u", [2, 3, 4])
@pytest.mark.parametrize("n_active", [0, 1, 5, 37, 64])
def test_ownership_balances_the_active_set(u, n_active):
    n = 64
    gen = torch.Generator().manual_seed(n_active * 10 + u)
    active = torch.randperm(n, generator=gen)[:n_active].sort().values
    S, m = ownership(active if n_active else None, n, u)
    L = rows_per_rank(n, u)
    assert S.numel() == u * L and L * u >= n + u - 1  # the same shape whatever the active set
    assert set(S.tolist()) == set(range(n))  # every token owned, repeats only as padding
    assert S.numel() - n <= 2 * u - 1
    # every rank: the same number of active rows, the first m of its L (all of them when every token is active)
    assert m == (L if n_active == n else -(-n_active // u))
    fresh = torch.cat([S[p * L : p * L + m] for p in range(u)])
    assert set(fresh.tolist()) == set(active.tolist())
    assert fresh.numel() - n_active < (u if n_active < n else 2 * u)
    for p in range(u):
        rest = S[p * L + m : (p + 1) * L]
        assert not set(rest.tolist()) & set(active.tolist())


def test_ownership_of_a_clustered_mask_is_balanced():
    """A mask in one corner (contiguous token ranges) still gives every rank a quarter of the active tokens."""
    n, u = 4 * 16 * 16, 4
    grid = torch.zeros(4, 16, 16, dtype=torch.bool)
    grid[:, :5, :7] = True
    active = grid.flatten().nonzero()[:, 0]
    S, m = ownership(active, n, u)
    assert m * u == active.numel() == 140


def test_traffic_per_kind_and_forward():
    t = Traffic()
    t.add("full", "attention_in", 300)
    t.add("full", "attention_out", 100)
    t.add("partial", "attention_in", 60)
    t.count("full")
    t.count("full")
    t.count("partial")
    d = t.to_dict()
    assert d["full"]["bytes_sent"] == 400 and d["full"]["bytes_per_forward"] == 200
    assert d["partial"] == {"forwards": 1, "bytes_sent": 60, "bytes_per_forward": 60, "by_op": {"attention_in": 60}}


@pytest.mark.parametrize(
    ("flag", "fragment"),
    [("cfg", "--parallel cfg needs 2 processes: start the edit with torchrun --nproc-per-node 2"),
     ("cfg,ulysses=2", "needs 4 processes"), ("tensor=2", "expected cfg, ulysses=U")],
)  # fmt: skip
def test_cli_parallel_outside_torchrun_is_bad_input(flag, fragment, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    video = tmp_path / "in.mp4"
    video.write_bytes(b"")
    result = CliRunner().invoke(app, ["edit", str(video), "--box", "0,0,8,8", "--prompt", "x", "-o",
                                      str(tmp_path / "o.mp4"), "--parallel", flag])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_memory_estimate_per_gpu_of_a_layout():
    """`hetcache memory --parallel`: cfg holds one branch's caches per GPU, Ulysses 1/U of the step caches (plus
    its padding rows), the prompt's K/V and the weights replicated; a layout the model cannot take is bad input."""
    from hetcache_cli.errors import InputError
    from hetcache_cli.pipeline.memory import estimate, model_sizes

    sizes = model_sizes("wan2.1-vace-1.3b")
    one = estimate(sizes, 33, 480, 832, "bfloat16")
    cfg = estimate(sizes, 33, 480, 832, "bfloat16", parallel="cfg")
    both = estimate(sizes, 33, 480, 832, "bfloat16", parallel="cfg,ulysses=4")
    assert (one["gpus"], cfg["gpus"], both["gpus"]) == (1, 2, 8)
    assert cfg["gpu_cache_bytes"] * 2 == one["gpu_cache_bytes"] and cfg["branches"] == 1
    assert cfg["gpu_weights_bytes"] == both["gpu_weights_bytes"] == one["gpu_weights_bytes"]
    text = (2 * 45 + 1) * 512 * 1536 * 2  # the prompt's embedding and K/V in 45 layers, bf16: replicated
    ratio = (both["gpu_cache_bytes"] - text) / (cfg["gpu_cache_bytes"] - text)
    assert 0.25 <= ratio < 0.25 * 1.001, ratio  # 14,040 tokens: 3,511 rows per rank, 4 of them padding
    assert both["gpu_activation_bytes"] < cfg["gpu_activation_bytes"] / 2
    with pytest.raises(InputError, match="12 attention heads, which 8 does not divide"):
        estimate(sizes, 33, 480, 832, "bfloat16", parallel="ulysses=8")
