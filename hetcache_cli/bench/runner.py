"""Runs one clip many times with different cache settings, cheaply, and scores each run against uncached.

What every run of a clip shares is computed once: the VAE encoding of the conditioning video
(`WanVACEPipeline.prepare_video_latents`, memoised by content for the runner's lifetime) and
the prompt embeddings (the pipeline's own `encode_prompt`, memoised likewise). The denoising
loop runs through the pipeline itself with HetCache attached, to latents; latents are then
decoded in small batches (the tiny VAE is overhead-bound: a batch of 4 costs ~2 single decodes).
Quality is PSNR of the decoded float frames (0..255, before any uint8 rounding or paste-back)
against the uncached run's, inside the mask, in the 16-px margin band and in the background, and
in the visible region (the mask and the band the paste-back blends, with its blend weight:
`eval/visible.py`, the edit's default paste dilation and feather).
FLOPs are the analytic count of what ran (`StepStats`, one record per step and branch).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from hetcache_cli.bench.clips import SuiteClip
from hetcache_cli.cache import HetCacheConfig, StepStats, apply_hetcache, remove_hetcache
from hetcache_cli.cache.flops import ModelDims
from hetcache_cli.eval.metrics import PSNR_CAP_DB, psnr_by_region
from hetcache_cli.eval.regions import region_masks
from hetcache_cli.eval.visible import visible_alpha, visible_psnr

DECODE_BATCH = 4


@dataclass
class RunResult:
    latents: torch.Tensor  # [1, C, T', H', W'] final latents
    summary: dict  # StepStats.summary()
    records: list  # StepStats.records
    video: np.ndarray | None = None  # [F, H, W, 3] float32 0..255, once decoded
    extras: dict = field(default_factory=dict)

    @property
    def flops_cut(self) -> float:
        flops = self.summary["flops"]
        return self.summary["flops_full"] / flops if flops > 0 else math.inf


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def shared_conditioning(pipe):
    """Memoise the pipeline's conditioning VAE encode and prompt encode by their inputs' content."""
    encode_video, encode_prompt = pipe.prepare_video_latents, pipe.encode_prompt
    videos: dict = {}
    prompts: dict = {}

    def prepare_video_latents(video, mask, reference_images=None, generator=None, device=None):
        if reference_images is not None and any(r is not None for refs in reference_images for r in refs):
            return encode_video(video, mask, reference_images, generator, device)
        key = (_digest(video, mask), str(device))
        if key not in videos:
            videos[key] = encode_video(video, mask, reference_images, generator, device)
        return videos[key].clone()

    def cached_prompt(prompt, negative_prompt=None, do_classifier_free_guidance=True, **kwargs):
        if kwargs.get("prompt_embeds") is not None or kwargs.get("negative_prompt_embeds") is not None:
            return encode_prompt(prompt, negative_prompt, do_classifier_free_guidance, **kwargs)
        key = (str(prompt), str(negative_prompt), bool(do_classifier_free_guidance),
               kwargs.get("max_sequence_length"), str(kwargs.get("device")), kwargs.get("num_videos_per_prompt"))
        if key not in prompts:
            prompts[key] = encode_prompt(prompt, negative_prompt, do_classifier_free_guidance, **kwargs)
        return tuple(None if t is None else t.clone() for t in prompts[key])

    saved = {name: pipe.__dict__[name] for name in ("prepare_video_latents", "encode_prompt") if name in pipe.__dict__}
    pipe.prepare_video_latents, pipe.encode_prompt = prepare_video_latents, cached_prompt
    try:
        yield
    finally:
        for name in ("prepare_video_latents", "encode_prompt"):
            if name in saved:
                setattr(pipe, name, saved[name])
            else:
                delattr(pipe, name)


class ClipRunner:
    """One clip on one pipeline: `run(config, guidance)` -> RunResult; `decode(results)`; `score(result, ref)`."""

    def __init__(self, pipe, clip: SuiteClip, steps: int = 30, seed: int = 0, negative_prompt: str = "",
                 margin_px: int = 16, paste_dilation: int = 4, paste_feather: int = 4) -> None:
        import PIL.Image

        self.pipe, self.clip, self.steps, self.seed, self.negative_prompt = pipe, clip, steps, seed, negative_prompt
        self.video = [PIL.Image.fromarray(f) for f in clip.frames]
        rgb = np.repeat((clip.mask[..., None] * 255).astype(np.uint8), 3, axis=-1)
        self.mask = [PIL.Image.fromarray(m) for m in rgb]
        self.regions = region_masks(clip.mask, margin_px)
        self.alpha = visible_alpha(clip.mask, paste_dilation, paste_feather)  # what paste-back keeps of the edit

    @torch.no_grad()
    def run(self, config: HetCacheConfig, guidance: float, observer=None) -> RunResult:
        """The denoising loop with `config` attached; `observer(hook)` may wrap the hook before the run."""
        pipe = self.pipe
        stats = StepStats(dims=ModelDims.from_config(pipe.transformer.config, text_len=512))
        hook = apply_hetcache(pipe, config, stats=stats)
        extras: dict = {}
        if observer is not None:
            observer(hook, extras)
        frames, height, width = self.clip.frames.shape[:3]
        try:
            latents = pipe(
                prompt=self.clip.prompt, negative_prompt=self.negative_prompt, video=self.video, mask=self.mask,
                height=height, width=width, num_frames=frames, num_inference_steps=self.steps,
                guidance_scale=guidance, generator=torch.Generator().manual_seed(self.seed), output_type="latent",
            ).frames
        finally:
            remove_hetcache(pipe)
        return RunResult(latents=latents.float(), summary=stats.summary(), records=list(stats.records), extras=extras)

    @torch.no_grad()
    def decode(self, results: list[RunResult]) -> None:
        """Fill `result.video` for every result that has none, DECODE_BATCH at a time."""
        pending = [r for r in results if r.video is None]
        vae = self.pipe.vae
        z = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1)
        for i in range(0, len(pending), DECODE_BATCH):
            chunk = pending[i : i + DECODE_BATCH]
            latents = torch.cat([r.latents for r in chunk]).to(vae.device, vae.dtype)
            latents = latents * std.to(latents) + mean.to(latents)
            video = vae.decode(latents, return_dict=False)[0].float()  # [B, 3, F, H, W] in -1..1
            video = ((video.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 4, 1).cpu().numpy()  # [B, F, H, W, 3]
            for r, v in zip(chunk, video):
                r.video = v

    def score(self, result: RunResult, reference: RunResult) -> dict:
        """PSNR (dB, capped) by region of a decoded run against the decoded reference; `visible` after paste-back."""
        psnr = psnr_by_region(result.video, reference.video, self.regions)
        psnr["visible"] = visible_psnr(result.video, reference.video, self.alpha)
        return {k: (None if v is None else min(v, PSNR_CAP_DB)) for k, v in psnr.items()}
