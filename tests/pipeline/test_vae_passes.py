"""The edit's passes outside the transformer: the prompt encoded once per edit, one batched VAE encode,
tiled convolutions on the CPU, a decode of only the pasted region, and the stage split in the statistics."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.pipeline.vae import (
    REGION_MARGIN, DecodeBox, batched_encode, cpu_convolutions, decode_box, plain_convolutions, restore_encode,
    tile_convolutions, untile_convolutions,
)  # fmt: skip
from hetcache_cli.resources import embedded_model_dir

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_vae():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan.from_pretrained(embedded_model_dir() / "vae").eval()


def _video(frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """[1, 3, F, size, size] in [-1, 1]: smooth colour fields with edges (a VAE's kind of input)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, frames, size // 16, size // 16, generator=g)
    video = torch.nn.functional.interpolate(coarse, size=(frames, size, size), mode="trilinear")
    return (video * 2 - 1).clamp(-1, 1)


def test_the_batched_encode_gives_the_two_encodes_latents(tiny_model_dir):
    from diffusers import WanVACEPipeline

    pipe = WanVACEPipeline.from_pretrained(tiny_model_dir)
    video = _video(5, 32)
    mask = (torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    with torch.no_grad():
        expected = pipe.prepare_video_latents(video, mask, [[]], None, torch.device("cpu"))
        calls = []
        encode = pipe.vae.encode
        pipe.vae.encode = lambda x, *a, **k: calls.append(x.shape[0]) or encode(x, *a, **k)
        batched_encode(pipe)
        got = pipe.prepare_video_latents(video, mask, [[]], None, torch.device("cpu"))
        restore_encode(pipe)
    assert calls == [2]  # one pass, the inactive and reactive streams as a batch
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()
    assert "prepare_video_latents" not in vars(pipe)  # restored: the class's method again


def test_tiled_convolutions_equal_the_plain_ones(demo_vae):
    video = _video(5, 160)
    with torch.no_grad():
        z = demo_vae.encode(video).latent_dist.mode()
        plain_z, plain = z, demo_vae.decode(z).sample
        assert tile_convolutions(demo_vae, tile=48) > 10
        try:
            tiled_z = demo_vae.encode(video).latent_dist.mode()
            tiled = demo_vae.decode(z).sample
        finally:
            untile_convolutions(demo_vae)
    assert not any("_conv_forward" in vars(m) for m in demo_vae.modules())
    assert (tiled_z - plain_z).abs().max() < 1e-5
    assert (tiled - plain).abs().max() < 1e-5


def test_cpu_layout_gives_the_same_latents_and_is_undone(demo_vae):
    video = torch.cat([_video(5, 96), _video(5, 96).flip(-1)])  # a batch of two streams, as the edit encodes
    with torch.no_grad():
        plain = demo_vae.encode(video).latent_dist.mode()
        cpu_convolutions(demo_vae)
        try:
            assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d)
                       for m in demo_vae.encoder.modules() if isinstance(m, torch.nn.Conv3d))  # fmt: skip
            laid_out = demo_vae.encode(video).latent_dist.mode()
        finally:
            plain_convolutions(demo_vae)
    assert (laid_out - plain).abs().max() < 1e-5
    assert all(m.weight.is_contiguous() for m in demo_vae.modules() if isinstance(m, torch.nn.Conv3d))
    assert not any("_conv_forward" in vars(m) for m in demo_vae.modules())


def test_decode_box_covers_the_footprint_with_its_margin():
    box = decode_box((300, 200, 340, 260), (64, 64), margin=4)  # latent rows 25..32.5, columns 37.5..42.5
    assert (box.y0, box.y1, box.x0, box.x1) == (21, 37, 33, 47) and not box.whole
    assert box.fraction == pytest.approx(16 * 14 / 64**2)
    assert decode_box((500, 0, 512, 10), (64, 64), margin=4) == DecodeBox(0, 6, 58, 64, 64, 64)  # clipped
    assert decode_box((0, 0, 512, 512), (64, 64)).whole  # most of the frame: decode all of it
    assert decode_box(None, (64, 64)).whole


def test_the_region_decode_matches_the_whole_decode_inside_the_footprint(demo_vae):
    """The stated tolerance (docs/benchmarks.md): at the default margin, at most 3 levels of 255 and 0.5 on
    average inside the footprint (measured 2.4 and 0.33 on the demo VAE, 2.6 / 0.73 on a real-width one)."""
    video = _video(5, 256, seed=3)
    box = decode_box((96, 100, 160, 156), (32, 32))  # a 64x56 footprint in a 256x256 frame
    assert not box.whole and box.fraction < 0.6
    with torch.no_grad():
        z = demo_vae.encode(video).latent_dist.mode()
        whole = demo_vae.decode(z).sample.clamp(-1, 1)
        part = demo_vae.decode(z[..., box.y0 : box.y1, box.x0 : box.x1]).sample.clamp(-1, 1)
    inside = whole[..., box.y0 * 8 : box.y1 * 8, box.x0 * 8 : box.x1 * 8]
    y, x = 100 - box.y0 * 8, 96 - box.x0 * 8
    diff = (part - inside)[..., y : y + 56, x : x + 64].abs() * 127.5
    assert REGION_MARGIN == 8
    assert diff.max() <= 3.0 and diff.mean() <= 0.5, (diff.max(), diff.mean())


def _edit(clip, model, out, *extra):
    model_args = ["--model", model] if model is not None else []
    args = ["edit", clip["video"], "--mask", clip["mask"], "--prompt", "a red ball", *model_args, "--steps", 2,
            "--window-frames", 5, "--window-overlap", 1, "--crop-min-size", 32, "--max-area", 64 * 64, "--crf", 0,
            "-o", out, "--quiet", *extra]  # fmt: skip
    return runner.invoke(app, [str(a) for a in args])


def test_the_prompt_is_encoded_once_per_edit_and_the_stages_are_recorded(small_clip, tiny_model_dir, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    from transformers import UMT5EncoderModel

    calls = []
    forward = UMT5EncoderModel.forward
    monkeypatch.setattr(UMT5EncoderModel, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    out = tmp_path / "o.mp4"
    r = _edit(small_clip, tiny_model_dir, out, "--guidance-scale", 5)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(out.with_suffix(".stats.json").read_text())
    assert len(doc["windows"]) >= 2
    assert len(calls) == 2  # the prompt and the negative prompt, once each, for every window and branch
    assert doc["summary"]["text_encodes"] == 1
    stages = doc["summary"]["stages"]
    for name in ("read", "text_encode", "vae_encode", "denoise", "vae_decode", "composite", "write", "join"):
        assert stages[name] > 0, name
    assert stages["transformer"] <= stages["denoise"]
    assert sum(stages[k] for k in stages if k not in ("transformer", "edit", "other")) <= stages["edit"]
    assert doc["windows"][0]["stages"]["text_encode"] > 0
    assert all("text_encode" not in w["stages"] for w in doc["windows"][1:])  # reused, not encoded again
    assert all(w["decode"]["fraction"] <= 1.0 for w in doc["windows"])


@pytest.mark.slow
def test_region_and_full_decodes_give_near_outputs(big_frames_small, tmp_path):
    """The embedded model (a trained VAE; a random one's decoder reaches further): the whole edit's output
    with the region decode within 3 levels of the full decode's (measured: 2)."""
    outs = {}
    for mode in ("region", "full"):
        out = tmp_path / f"{mode}.mp4"
        r = _edit(big_frames_small, None, out, "--window-frames", 9, "--vae-decode", mode, "--max-area", 256 * 256,
                  "--crop-min-size", 256, "--cache", "none", "--steps", 1)  # fmt: skip
        assert r.exit_code == 0, r.stderr
        outs[mode] = (out, json.loads(out.with_suffix(".stats.json").read_text()))
    from hetcache_cli.io.video import read_video

    region_doc, full_doc = outs["region"][1], outs["full"][1]
    assert region_doc["windows"][0]["decode"]["fraction"] < 0.6 and full_doc["windows"][0]["decode"]["fraction"] == 1
    a = read_video(outs["region"][0]).frames.astype(np.int16)
    b = read_video(outs["full"][0]).frames.astype(np.int16)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 3


@pytest.fixture(scope="module")
def big_frames_small(tmp_path_factory):
    """9 frames 320x320, a small static mask: a crop much larger than the mask's paste footprint."""
    import cv2

    from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render
    from hetcache_cli.io.video import write_video

    root = tmp_path_factory.mktemp("region")
    ball = MovingShape("ball", "white", 8, (160, 160), (0.2, 0.2))
    frames, _ = render(SceneSpec(9, 320, 320, shapes=[ball], texture_seed=5))
    video = write_video(root / "clip.mp4", frames, 8, lossless=True)
    mask = np.zeros((320, 320), np.uint8)
    mask[150:175, 150:175] = 255
    cv2.imwrite(str(mask_path := root / "mask.png"), mask)
    return {"video": video, "mask": mask_path}


@pytest.mark.slow
def test_vae_tiling_is_used_when_asked_and_switched_off_after(big_frames_small, tmp_path, monkeypatch):
    """`--vae-tiling`: diffusers' tiled encode and decode run (the 320-px crop exceeds its 256-px tile), the
    output stays within 4 levels of the untiled edit's, and the next edit without the flag runs untiled again."""
    from diffusers import AutoencoderKLWan

    from hetcache_cli.io.video import read_video

    calls = []
    for name in ("tiled_encode", "tiled_decode"):
        method = getattr(AutoencoderKLWan, name)
        monkeypatch.setattr(AutoencoderKLWan, name,
                            lambda self, *a, _m=method, _n=name, **k: calls.append(_n) or _m(self, *a, **k))  # fmt: skip
    outs = {}
    for flag in ("--vae-tiling", "--no-vae-tiling"):
        out = tmp_path / f"{flag}.mp4"
        before = len(calls)
        r = _edit(big_frames_small, None, out, "--window-frames", 9, "--vae-decode", "full", "--max-area", 320 * 320,
                  "--crop-min-size", 320, "--cache", "none", "--steps", 1, flag)  # fmt: skip
        assert r.exit_code == 0, r.stderr
        outs[flag] = (read_video(out).frames.astype(np.int16), calls[before:])
    assert {"tiled_encode", "tiled_decode"} <= set(outs["--vae-tiling"][1])
    assert outs["--no-vae-tiling"][1] == []  # switched off after the tiled edit
    diff = np.abs(outs["--vae-tiling"][0] - outs["--no-vae-tiling"][0])
    assert diff.max() <= 4, diff.max()  # measured: max 2, mean 0.003 levels of 255
