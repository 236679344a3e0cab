"""The FLOPs counter: closed-form counts, and instrumented == analytic on the demo model (docs/method.md section 6)."""

import pytest
import torch
import torch.nn.functional as F

from hetcache_cli.bench.flops_counter import count_flops
from hetcache_cli.cache import HetCacheConfig, StepStats, apply_hetcache, remove_hetcache
from hetcache_cli.cache.flops import ModelDims, forward_flops
from hetcache_cli.resources import embedded_model_dir


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 16)
        self.conv = torch.nn.Conv3d(4, 6, kernel_size=(1, 2, 2), stride=(1, 2, 2))

    def forward(self, x, video):
        y = self.proj(x)  # [2, 5, 16]
        q = y.unflatten(-1, (2, 8)).transpose(1, 2)  # [2, 2, 5, 8]: B, H, L, d
        a = F.scaled_dot_product_attention(q, q, q)
        m = y @ y.transpose(1, 2)  # [2, 5, 5], inner 16
        return a.sum() + m.sum() + self.conv(video).sum()


def test_counts_are_the_closed_forms_and_only_inside_the_forward():
    toy = _Toy()
    x, video = torch.randn(2, 5, 8), torch.randn(1, 4, 3, 4, 4)
    toy.proj(x)  # outside the counted forward: not counted
    with count_flops(toy) as count:
        toy(x, video)
        toy.proj(x)
    assert count.linear == 2 * (2 * 5) * 8 * 16
    assert count.attention == 4 * 2 * 2 * 5 * 5 * 8
    assert count.matmul == 2 * (2 * 5 * 5) * 16
    assert count.conv == 2 * (6 * 3 * 2 * 2) * (4 * 1 * 2 * 2)
    assert count.by_part == {"proj": count.linear, "conv": count.conv}
    assert count.forwards == [count.total]
    assert not toy._forward_hooks and not toy.proj._forward_pre_hooks and not toy.conv._forward_hooks


@pytest.fixture(scope="module")
def demo_transformer():
    from diffusers import WanVACETransformer3DModel

    torch.manual_seed(0)
    return WanVACETransformer3DModel.from_pretrained(embedded_model_dir() / "transformer").eval()


def _inputs(transformer, timestep=500.0):
    """The demo clip's shapes: 17 frames 160x160 -> 5 x 20 x 20 latents, 500 tokens; 512 text tokens."""
    c = transformer.config
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, c.in_channels, 5, 20, 20, generator=g),
        timestep=torch.tensor([timestep]),
        encoder_hidden_states=torch.randn(1, 512, c.text_dim, generator=g),
        control_hidden_states=torch.randn(1, c.vace_in_channels, 5, 20, 20, generator=g),
        return_dict=False,
    )


@torch.no_grad()
def test_uncached_forward_equals_the_analytic_count(demo_transformer):
    dims = ModelDims.from_config(demo_transformer.config)
    with count_flops(demo_transformer) as count:
        demo_transformer(**_inputs(demo_transformer))
    analytic = forward_flops(dims, 500)
    assert count.in_blocks == pytest.approx(analytic, rel=1e-3)  # the same terms, counted from the calls
    assert count.total == pytest.approx(analytic, rel=0.03)  # + patch embeddings, text embedder, head
    assert count.total > analytic


@pytest.mark.slow
@torch.no_grad()
def test_fixed_schedule_hetcache_run_matches_its_analytic_count(demo_transformer):
    stats = StepStats()
    schedule = "FFPRPPRF"
    handle = apply_hetcache(demo_transformer, HetCacheConfig(schedule=schedule), stats=stats)
    try:
        mask = torch.zeros(17, 160, 160, dtype=torch.bool)
        mask[:, 40:100, 50:120] = True
        handle.set_mask(mask)
        timesteps = torch.linspace(999.0, 50.0, len(schedule))
        handle.begin_run(timesteps, branches=1, n_tokens=500)
        with count_flops(demo_transformer) as count, demo_transformer.cache_context("cond"):
            for t in timesteps:
                demo_transformer(**_inputs(demo_transformer, float(t)))
        summary = stats.summary()
    finally:
        remove_hetcache(demo_transformer)
    assert summary["schedule"] == schedule and summary["decisions"]["partial"] == 3
    assert count.in_blocks == pytest.approx(summary["flops"], rel=0.05)
    assert count.total == pytest.approx(summary["flops"], rel=0.05)
    assert count.matmul > 0  # the context scoring and k-means of the FULL steps are counted too
    full = forward_flops(ModelDims.from_config(demo_transformer.config), 500)
    assert [round(f / full, 2) for f in count.forwards][3] < 0.01  # the REUSE step: head and embeddings only
