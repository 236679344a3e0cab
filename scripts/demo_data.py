"""The demo model's data: procedural edit examples and their VACE conditioning, built exactly as
`WanVACEPipeline.__call__` builds it (used by train_demo_model.py and eval_demo_model.py).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hetcache_cli.io.synthetic import COLORS, SHAPES, MovingShape, SceneSpec, render  # noqa: E402
from hetcache_cli.pipeline.tiny import TinyConfig  # noqa: E402

CPU = torch.device("cpu")
REMOVE_PROMPT = "empty background"


def build_trained_vae(cfg: TinyConfig):
    """The tiny AutoencoderKLWan (8x spatial, 4x causal temporal) with Wan2.2's residual shortcuts.

    Same layout as tiny.build_vae plus `is_residual` (parameter-free avg-down / dup-up shortcuts
    across resolutions): without them the VAE barely learns in a CPU budget. No `patch_size`:
    WanVACEPipeline derives its spatial factor from len(temperal_downsample) and must see 8.
    """
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=cfg.vae_base_dim,
        decoder_base_dim=cfg.vae_base_dim,
        z_dim=cfg.z_dim,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        latents_mean=[0.0] * cfg.z_dim,
        latents_std=[1.0] * cfg.z_dim,
    )


# ---------------------------------------------------------------- procedural edit examples
@dataclass
class EditExample:
    source: np.ndarray  # [F, H, W, 3] uint8, the clip given to the pipeline
    mask: np.ndarray  # [F, H, W] bool, white = edit
    target: np.ndarray  # [F, H, W, 3] uint8, ground truth: source outside the mask
    prompt: str
    kind: str  # recolor | reshape | remove
    cover: np.ndarray  # [F, H, W] float, the prompted object's coverage (zeros for remove)


def random_scene(rng: np.random.Generator, frames: int, height: int, width: int) -> SceneSpec:
    """A textured, panning background with the edited object last in `shapes` (and maybe a distractor)."""

    def moving(color: str, shape: str) -> MovingShape:
        r = float(rng.uniform(10, 22))
        lo = np.array([r + 2, r + 2])
        hi = np.array([height - r - 2, width - r - 2])
        start = rng.uniform(lo, hi)
        end = np.clip(start + rng.uniform(-45, 45, 2), lo, hi)
        vel = (end - start) / max(frames - 1, 1)
        return MovingShape(shape, color, r, (float(start[0]), float(start[1])), (float(vel[0]), float(vel[1])))

    colors, shapes = list(COLORS), list(SHAPES)
    items = []
    if rng.random() < 0.35:
        items.append(moving(colors[rng.integers(len(colors))], shapes[rng.integers(len(shapes))]))
    items.append(moving(colors[rng.integers(len(colors))], shapes[rng.integers(len(shapes))]))
    pan = (float(rng.uniform(-0.8, 0.8)), float(rng.uniform(-1.2, 1.2)))
    return SceneSpec(frames, height, width, pan=pan, shapes=items, texture_seed=int(rng.integers(2**31)))


def make_mask(rng: np.random.Generator, cover: np.ndarray, kind: str | None = None) -> np.ndarray:
    """path = the object's whole trajectory (like the demo), track = per frame, box = path's bounding box."""
    kind = kind or rng.choice(["path", "track", "box"], p=[0.5, 0.3, 0.2])
    k = int(rng.choice([5, 9, 13]))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    hit = (cover > 0.02).astype(np.uint8)  # [F, H, W]
    if kind == "track":
        return np.stack([cv2.dilate(m, kernel) for m in hit]).astype(bool)
    region = cv2.dilate(hit.max(axis=0), kernel)
    if kind == "box":
        ys, xs = np.nonzero(region)
        region = np.zeros_like(region)
        region[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
    return np.repeat(region[None].astype(bool), cover.shape[0], axis=0)


def make_target(scene: SceneSpec, source: np.ndarray, mask: np.ndarray, kind: str, color: str, shape: str):
    """(target clip, prompt, object coverage): the scene re-rendered with the edited object changed."""
    obj = scene.shapes[-1]
    others = scene.shapes[:-1]
    if kind == "remove":
        new, prompt = None, REMOVE_PROMPT
    else:
        new = MovingShape(shape if kind == "reshape" else obj.shape, color, obj.radius, obj.start, obj.velocity)
        prompt = new.prompt
    spec = SceneSpec(scene.frames, scene.height, scene.width, scene.pan, others + ([new] if new else []), scene.texture_seed)
    rendered, _ = render(spec)
    cover = np.zeros(mask.shape, np.float32)
    if new is not None:
        _, cover = render(SceneSpec(scene.frames, scene.height, scene.width, scene.pan, [new], scene.texture_seed))
    target = np.where(mask[..., None], rendered, source)
    return target, prompt, cover * mask


def random_edits(rng: np.random.Generator, frames: int, height: int, width: int, n: int) -> list[EditExample]:
    """n edits of one source clip and mask (they share the conditioning, only the target differs)."""
    scene = random_scene(rng, frames, height, width)
    source, _ = render(scene)
    obj = scene.shapes[-1]
    _, obj_cover = render(SceneSpec(frames, height, width, scene.pan, [obj], scene.texture_seed))
    mask = make_mask(rng, obj_cover)
    out = []
    for kind in rng.choice(["recolor", "reshape", "remove"], size=n, p=[0.45, 0.25, 0.3]):
        color = str(rng.choice([c for c in COLORS if c != obj.color or rng.random() < 0.1]))
        shape = str(rng.choice([s for s in SHAPES if s != obj.shape]))
        target, prompt, cover = make_target(scene, source, mask, str(kind), color, shape)
        out.append(EditExample(source, mask, target, prompt, str(kind), cover))
    return out


# ---------------------------------------------------------------- pipeline-built conditioning
def flow_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """UniPC's flow sigmas (use_flow_sigmas, flow_shift) for uniform u in (0, 1]."""
    return shift * u / (1 + (shift - 1) * u)


def to_pil(frames: np.ndarray) -> list:
    return [PIL.Image.fromarray(f) for f in frames]


def mask_pil(mask: np.ndarray) -> list:
    return to_pil(np.repeat((mask[..., None] * 255).astype(np.uint8), 3, axis=-1))


@torch.no_grad()
def vace_conditioning(pipe, source: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """[1, 2z + 64, T, h, w], built exactly as WanVACEPipeline.__call__ builds it."""
    f, h, w = mask.shape
    video, m, refs = pipe.preprocess_conditions(to_pil(source), mask_pil(mask), None, 1, h, w, f, torch.float32, CPU)
    latents = pipe.prepare_video_latents(video, m, refs, None, CPU)
    return torch.cat([latents, pipe.prepare_masks(m, refs, None)], dim=1)


@torch.no_grad()
def vace_conditioning_batch(pipe, items: list[tuple[np.ndarray, np.ndarray]]) -> list[torch.Tensor]:
    """vace_conditioning for several (source, mask) pairs of one size with a single VAE encode.

    The same steps as `WanVACEPipeline.prepare_video_latents` (binarised mask, inactive = video *
    (1 - m), reactive = video * m, argmax latents, (z - mean) / std) and `prepare_masks`, batched:
    the pipeline encodes one video at a time, which on a CPU costs several times more per clip.
    """
    f, h, w = items[0][1].shape
    videos, masks, refs = [], [], []
    for source, mask in items:
        video, m, ref = pipe.preprocess_conditions(to_pil(source), mask_pil(mask), None, 1, h, w, f, torch.float32, CPU)
        videos.append(video)
        masks.append(m)
        refs.append(ref)
    video, m = torch.cat(videos), torch.where(torch.cat(masks) > 0.5, 1.0, 0.0)
    z = pipe.vae.encode(torch.cat([video * (1 - m), video * m])).latent_dist.mode()
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1)
    z = (z.float() - mean) / std
    n = len(items)
    return [torch.cat([z[i], z[n + i], pipe.prepare_masks(masks[i], refs[i], None)[0]]) for i in range(n)]


@torch.no_grad()
def target_latents(pipe, clips: list[np.ndarray]) -> torch.Tensor:
    """[N, z, T, h, w]: posterior modes normalised as the pipeline un-normalises before decoding."""
    h, w = clips[0].shape[1:3]
    video = torch.cat([pipe.video_processor.preprocess_video(to_pil(c), h, w) for c in clips])
    z = pipe.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (z - mean) / std


@torch.no_grad()
def vae_heldout_psnr(pipe, clips: int = 3) -> list[float]:
    """Reconstruction PSNR (dB) per frame, averaged over held-out 17x160x160 clips (the demo's size)."""
    rng = np.random.default_rng([12345, 3])  # a stream no training stage draws from
    mse = 0.0
    for _ in range(clips):
        video = pipe.video_processor.preprocess_video(to_pil(render(random_scene(rng, 17, 160, 160))[0]), 160, 160)
        rec = pipe.vae.decode(pipe.vae.encode(video).latent_dist.mode()).sample.clamp(-1, 1)
        mse = mse + (rec - video).pow(2).mean(dim=(0, 1, 3, 4)) / clips
    return [round(10 * math.log10(4 / m), 2) for m in mse.tolist()]
