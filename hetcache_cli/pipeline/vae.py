"""The VAE's two passes of an edit, cheaper: one batched encode, and a decode of only what reaches the file.

Encode. VACE conditions on two videos, the inactive stream (the source with the mask cleared) and the
reactive one (only the masked pixels); diffusers encodes them one after the other. `batched_encode`
replaces the pipeline's `prepare_video_latents` with one that encodes both as a batch of two: the same
convolutions over twice the batch, per-sample normalisation, so the same latents up to float rounding
(tests/pipeline/test_vae_passes.py) in one pass over the encoder's weights instead of two.

Decode. After paste-back only the mask and its paste band (dilation + feather) reach the output; the
rest of the crop is the source's pixels. `decode_region` decodes the latent box that covers that
footprint plus `margin` latent pixels on each side (the decoder's convolutions see that far; its one
attention layer per frame sees the whole box, so the result is close to, not equal to, a whole decode:
docs/benchmarks.md gives the measured difference) and fills the rest of the frame with the model's
input video, which paste-back does not use there.

On the CPU. oneDNN runs a 3-D convolution over one large frame several times slower than the same
pixels cut into tiles and stacked as a batch (measured on the demo VAE: decode 6.5 -> 3.2 s, encode
2.8 -> 1.2 s of process time). `tile_convolutions` makes the VAE's stride-1 3-D convolutions do that:
each output pixel is computed from the same inputs, with tiles that overlap by the kernel's reach,
so the result equals the plain convolution up to float rounding (4e-7 on the demo VAE). The encoder's
convolutions also run on channels-last weights there (its batch of two streams is not tiled): 1.5-2x
faster on the demo VAE, 1.1x at the real width, the same latents up to float rounding (1e-6).
`cpu_convolutions` applies both. On CUDA neither is used (cuDNN has no such cliff).
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DecodeBox", "batched_encode", "cpu_convolutions", "decode_box", "decode_latents", "plain_convolutions",
    "restore_encode", "tile_convolutions", "untile_convolutions", "vae_tiling",
]  # fmt: skip

CONV_TILE = 64  # output pixels per tile side for tile_convolutions
REGION_MARGIN = 8  # latent pixels around the footprint (64 px at the VAE's 8x)
WHOLE_ABOVE = 0.85  # decode the whole frame when the box would cover more than this share of it


@dataclass(frozen=True)
class DecodeBox:
    """Latent rows y0:y1 and columns x0:x1 to decode, of a latent frame h x w."""

    y0: int
    y1: int
    x0: int
    x1: int
    h: int
    w: int

    @property
    def whole(self) -> bool:
        return (self.y0, self.x0, self.y1, self.x1) == (0, 0, self.h, self.w)

    @property
    def fraction(self) -> float:
        return (self.y1 - self.y0) * (self.x1 - self.x0) / (self.h * self.w)

    def to_dict(self) -> dict:
        return {"latent_box": [self.x0, self.y0, self.x1, self.y1], "fraction": round(self.fraction, 4)}


def decode_box(box_px: tuple[int, int, int, int] | None, latent_hw: tuple[int, int], scale: int = 8,
               margin: int = REGION_MARGIN) -> DecodeBox:  # fmt: skip
    """The latent box to decode for a footprint: the pixel box (x0, y0, x1, y1, exclusive ends) at the working
    size where the output uses the model's pixels, grown by `margin` latent pixels. None gives the whole
    frame, and so does a box covering more than WHOLE_ABOVE of it (too little to save)."""
    h, w = latent_hw
    whole = DecodeBox(0, h, 0, w, h, w)
    if box_px is None:
        return whole
    x0, y0, x1, y1 = box_px
    box = DecodeBox(max(0, y0 // scale - margin), min(h, -(-y1 // scale) + margin),
                    max(0, x0 // scale - margin), min(w, -(-x1 // scale) + margin), h, w)  # fmt: skip
    return whole if box.fraction > WHOLE_ABOVE else box


def decode_latents(pipe, latents, box: DecodeBox, fill: np.ndarray) -> np.ndarray:
    """float32 [F, H, W, 3] in [0, 1]: the pipeline's own decode (denormalise, VAE decode, postprocess) of
    `latents` [1, C, T, h, w] inside `box`, `fill` (float32 [F', H, W, 3], F' >= F) elsewhere."""
    import torch

    vae = pipe.vae
    z = latents.to(vae.dtype)
    if not box.whole:
        z = z[..., box.y0 : box.y1, box.x0 : box.x1]
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
    std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
    z = z / std + mean
    with torch.no_grad():
        video = vae.decode(z, return_dict=False)[0]
    frames = np.asarray(pipe.video_processor.postprocess_video(video, output_type="np")[0], dtype=np.float32)
    if box.whole:
        return frames
    s = pipe.vae_scale_factor_spatial
    out = np.array(fill[: frames.shape[0]], dtype=np.float32)
    out[:, box.y0 * s : box.y1 * s, box.x0 * s : box.x1 * s] = frames
    return out


def batched_encode(pipe, clock=None) -> None:
    """Make the pipeline encode the inactive and reactive streams in one VAE pass (batch of two).

    `clock` (a StageClock) is charged the encode's time as "vae_encode". Reference images and a call
    without a mask go through diffusers' own method. Undone by `restore_encode`.
    """
    import torch
    from diffusers.pipelines.wan.pipeline_wan_vace import retrieve_latents

    original = getattr(pipe.prepare_video_latents, "_hetcache_original", pipe.prepare_video_latents)

    @functools.wraps(original)
    def prepare_video_latents(video, mask, reference_images=None, generator=None, device=None):
        has_refs = reference_images is not None and any(r is not None for batch in reference_images for r in batch)
        timer = clock.stage("vae_encode") if clock is not None else nullcontext()
        with timer:
            if mask is None or has_refs or video.shape[0] != 1 or isinstance(generator, list):
                return original(video, mask, reference_images, generator, device)
            vae = pipe.vae
            device = device or pipe._execution_device
            video = video.to(dtype=vae.dtype)
            shape = (1, vae.config.z_dim, 1, 1, 1)
            mean = torch.tensor(vae.config.latents_mean, device=device, dtype=torch.float32).view(shape)
            inv_std = 1.0 / torch.tensor(vae.config.latents_std, device=device, dtype=torch.float32).view(shape)
            mask = torch.where(mask > 0.5, 1.0, 0.0).to(dtype=vae.dtype)
            both = torch.cat([video * (1 - mask), video * mask])  # [2, 3, F, H, W]: inactive, reactive
            latents = retrieve_latents(vae.encode(both), generator, sample_mode="argmax")
            latents = ((latents.float() - mean) * inv_std).to(vae.dtype)
            inactive, reactive = latents[:1], latents[1:]
            return torch.cat([inactive, reactive], dim=1)  # [1, 2C, T, h, w] as diffusers builds it

    prepare_video_latents._hetcache_original = original
    pipe.prepare_video_latents = prepare_video_latents


def restore_encode(pipe) -> None:
    """Undo `batched_encode`."""
    original = getattr(pipe.prepare_video_latents, "_hetcache_original", None)
    if original is not None:
        if getattr(original, "__self__", None) is pipe:
            del pipe.prepare_video_latents  # the class's method again
        else:
            pipe.prepare_video_latents = original


def _tiled_conv(conv, tile: int):
    import torch
    import torch.nn.functional as F

    plain = conv._conv_forward

    def forward(x, weight, bias):
        kh, kw = conv.kernel_size[1], conv.kernel_size[2]
        n, _, _, h, w = x.shape
        oh, ow = h - kh + 1, w - kw + 1
        if n != 1 or (oh <= tile and ow <= tile):
            return plain(x, weight, bias)
        th, tw = min(tile, oh), min(tile, ow)
        ys = sorted({min(y, oh - th) for y in range(0, oh, tile)})
        xs = sorted({min(v, ow - tw) for v in range(0, ow, tile)})
        tiles = torch.cat([x[:, :, :, y : y + th + kh - 1, v : v + tw + kw - 1] for y in ys for v in xs])
        out = F.conv3d(tiles, weight, bias)  # [tiles, C, T', th, tw]
        res = out.new_empty(1, out.shape[1], out.shape[2], oh, ow)
        k = 0
        for y in ys:
            for v in xs:
                res[0, :, :, y : y + th, v : v + tw] = out[k]
                k += 1
        return res

    return forward


def tile_convolutions(vae, tile: int = CONV_TILE) -> int:
    """Make the VAE's stride-1, unpadded 3-D convolutions (every causal convolution: they pad before)
    run over one frame as a batch of overlapping tiles; returns how many. Undone by `untile_convolutions`."""
    import torch

    count = 0
    for module in vae.modules():
        if (
            isinstance(module, torch.nn.Conv3d) and module.stride == (1, 1, 1) and module.dilation == (1, 1, 1)
            and module.groups == 1 and tuple(module.padding) == (0, 0, 0) and module.padding_mode == "zeros"
            and "_conv_forward" not in module.__dict__
        ):  # fmt: skip
            module._conv_forward = _tiled_conv(module, tile)
            count += 1
    return count


def untile_convolutions(vae) -> None:
    """Undo `tile_convolutions`."""
    for module in vae.modules():
        module.__dict__.pop("_conv_forward", None)


def cpu_convolutions(vae) -> None:
    """The VAE's convolutions laid out for the CPU: stride-1 3-D convolutions tiled (`tile_convolutions`)
    and the encoder's weights channels-last. Undone by `plain_convolutions`."""
    import torch

    tile_convolutions(vae)
    _encoder_weights(vae, torch.channels_last_3d)


def plain_convolutions(vae) -> None:
    """Undo `cpu_convolutions`: plain convolutions over contiguous weights."""
    import torch

    untile_convolutions(vae)
    _encoder_weights(vae, torch.contiguous_format)


def _encoder_weights(vae, memory_format) -> None:
    import torch

    for module in vae.encoder.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.weight.data = module.weight.data.contiguous(memory_format=memory_format)


def vae_tiling(vae, enabled: bool) -> None:
    """Switch diffusers' spatial VAE tiling on or off (`vae_tiling` in the spec). The edit turns it off after."""
    if enabled:
        vae.enable_tiling()
    elif getattr(vae, "use_tiling", False):
        vae.disable_tiling()
