"""Where an edit's wall time goes, stage by stage, and the prompt encoded once per edit.

`StageClock` sums wall seconds per stage (CUDA work is synchronised before a stage ends, so a stage
is charged its own kernels). The stages of a window: `text_encode` (the prompt, once per edit: charged
to the first window), `vae_encode`, `denoise` (the pipeline's call minus its encode, with the
transformer's share from the cache statistics), `vae_decode`, `composite` (scale back, colour match,
paste-back, cross-fade), `read` (frames decoded from the source) and `write` (frames encoded to the
window's segment); the edit adds `join` (segments joined, audio muxed).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext

__all__ = ["STAGES", "PromptEmbeds", "StageClock", "stage_table"]

STAGES = ("read", "text_encode", "vae_encode", "denoise", "vae_decode", "composite", "write", "join")


class StageClock:
    """Seconds per stage; `stage(name)` times a block, `take()` returns and clears what was summed."""

    def __init__(self, device=None):
        self._cuda = device is not None and getattr(device, "type", str(device)) == "cuda"
        self._device = device
        self.seconds: dict[str, float] = {}

    def sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize(self._device)

    @contextmanager
    def stage(self, name: str):
        self.sync()
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - begin

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def take(self) -> dict[str, float]:
        out, self.seconds = {k: round(v, 6) for k, v in self.seconds.items()}, {}
        return out


class PromptEmbeds:
    """The prompt's (and negative prompt's) text embeddings, encoded on first use and reused by every
    window and both guidance branches of the edit: keyword arguments for the pipeline's call."""

    def __init__(self, pipe, prompt: str, negative_prompt: str | None, guidance_scale: float, clock=None):
        self._pipe, self._clock = pipe, clock
        self._args = (prompt, negative_prompt, guidance_scale)
        self._kwargs: dict | None = None
        self.encodes = 0

    def kwargs(self) -> dict:
        if self._kwargs is None:
            import torch

            from hetcache_cli.pipeline.model import execution_device

            prompt, negative, guidance = self._args
            timer = self._clock.stage("text_encode") if self._clock is not None else nullcontext()
            with timer, torch.no_grad():
                positive, negative_embeds = self._pipe.encode_prompt(
                    prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=guidance > 1.0,
                    num_videos_per_prompt=1, max_sequence_length=512, device=execution_device(self._pipe),
                )  # fmt: skip
            self.encodes += 1
            self._kwargs = {"prompt_embeds": positive}
            if negative_embeds is not None:
                self._kwargs["negative_prompt_embeds"] = negative_embeds
        return self._kwargs


def stage_table(windows: list[dict], edit_s: float | None = None, join_s: float = 0.0) -> dict:
    """The edit's stage split: seconds per stage summed over windows, the transformer's share of the
    denoising, and the rest of `edit_s` (from the first frame read to the file written) as `other`."""
    total = {name: 0.0 for name in STAGES}
    transformer = 0.0
    for window in windows:
        if window.get("resumed"):
            continue  # run by an earlier process: its time is not part of this one's
        for name, seconds in (window.get("stages") or {}).items():
            if name in total:
                total[name] += seconds
        transformer += float(window.get("transformer_ms") or 0.0) / 1e3
    total["join"] += join_s
    out = {name: round(seconds, 4) for name, seconds in total.items()}
    out["transformer"] = round(transformer, 4)
    if edit_s is not None:
        out["edit"] = round(edit_s, 4)
        out["other"] = round(max(0.0, edit_s - sum(total.values())), 4)
    return out
