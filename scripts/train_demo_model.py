"""Train the embedded demo model: a tiny Wan-VACE pipeline for masked video inpainting, on a CPU.

    python scripts/train_demo_model.py                      # start (or --resume) the full run
    python scripts/train_demo_model.py --resume             # continue from runs/demo_model/ckpt.pt
    python scripts/train_demo_model.py --export DIR         # diffusers folder from the latest checkpoint

Stages, each resumable from the last checkpoint:
  vae   AutoencoderKLWan on random crops of procedural clips (L1 + MSE reconstruction).
  stats per-channel latents_mean / latents_std written into the VAE config.
  pool  a fixed pool of edit examples encoded once: target latents x0 and the VACE conditioning
        built by the pipeline's own methods (preprocess_conditions, prepare_video_latents,
        prepare_masks), exactly as `WanVACEPipeline.__call__` builds it.
  dit   WanVACETransformer3DModel with flow matching: x_t = (1 - s) x0 + s n, target n - x0,
        timestep = 1000 s, s = shift(u) with the scheduler's flow_shift (as UniPC's flow sigmas).
The text encoder stays frozen at its seeded random init (prompt embeddings are cached).
Budgets are active minutes per stage (wall time per step, each step counted at most 60 s, so a
SIGSTOP pause costs nothing) with step caps; learning-rate schedules follow the same progress.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared cores: do not spin while waiting

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_data import (  # noqa: E402
    CPU,
    REMOVE_PROMPT,
    build_trained_vae,
    flow_sigma,
    make_mask,
    random_edits,
    random_scene,
    target_latents,
    vace_conditioning,
    vace_conditioning_batch,
    vae_heldout_psnr,
)

from hetcache_cli.io.synthetic import SceneSpec, render  # noqa: E402
from hetcache_cli.pipeline.tiny import TinyConfig, build_tiny_pipeline  # noqa: E402

THREADS = 2
TEXT_LEN = 512  # WanVACEPipeline's default max_sequence_length
# (frames, height, width) of the pool's clips and their shares; the demo runs at 17x160x160.
BUCKETS = ((17, 160, 160), (17, 128, 128), (17, 96, 160), (9, 160, 160))
BUCKET_WEIGHTS = (0.3, 0.45, 0.15, 0.1)
TRAINED_CONFIG = TinyConfig(vae_base_dim=16, heads=6, head_dim=16, ffn_dim=256)
STEP_CAP_S = 60.0  # a longer step was a pause (SIGSTOP), not work


# ---------------------------------------------------------------- training state
class Trainer:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cfg = TRAINED_CONFIG
        self.pipe = build_tiny_pipeline(self.cfg, seed=args.seed)
        torch.manual_seed(args.seed)
        self.pipe.register_modules(vae=build_trained_vae(self.cfg))
        self.pipe.text_encoder.requires_grad_(False)
        self.ema = {k: v.detach().clone() for k, v in self.pipe.transformer.state_dict().items()}
        self.stage, self.step = "vae", 0
        self.opt = self._optimizer("vae")
        self.rng = np.random.default_rng(args.seed)
        random.seed(args.seed)
        torch.manual_seed(args.seed)
        self.pool_count = 0
        self.active_s = 0.0  # this run's active seconds, all invocations
        self.stage_s = 0.0  # active seconds in the current stage
        self.invocation_s = 0.0
        self.since_ckpt_s = 0.0
        self.last_tick = time.monotonic()
        self.stop = False
        self.log_file = open(self.out / "log.jsonl", "a")

    def _optimizer(self, stage: str):
        if stage == "vae":
            return torch.optim.Adam(self.pipe.vae.parameters(), lr=self.args.vae_lr)
        return torch.optim.AdamW(self.pipe.transformer.parameters(), lr=self.args.dit_lr, betas=(0.9, 0.99), weight_decay=0.01)

    def active_minutes(self) -> float:
        return self.active_s / 60

    def tick(self):
        now = time.monotonic()
        dt = min(now - self.last_tick, STEP_CAP_S)
        self.last_tick = now
        for name in ("active_s", "stage_s", "invocation_s", "since_ckpt_s"):
            setattr(self, name, getattr(self, name) + dt)

    def progress(self, steps: int, minutes: float) -> float:
        return max(self.step / steps, self.stage_s / (60 * minutes))

    def next_stage(self, stage: str):
        self.stage, self.step, self.stage_s = stage, 0, 0.0

    def log(self, **rec):
        rec = {"time": time.strftime("%H:%M:%S"), "stage": self.stage, "step": self.step, **rec}
        line = json.dumps(rec)
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    # ------------------------------------------------------------ checkpoints
    def save(self):
        state = {
            "stage": self.stage,
            "step": self.step,
            "pool_count": self.pool_count,
            "active_s": self.active_s,
            "stage_s": self.stage_s,
            "config": self.cfg.to_dict(),
            "args": vars(self.args),
            "vae": self.pipe.vae.state_dict(),
            "vae_config": dict(self.pipe.vae.config),
            "transformer": self.pipe.transformer.state_dict(),
            "text_encoder": self.pipe.text_encoder.state_dict(),
            "ema": self.ema,
            "opt": self.opt.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": self.rng.bit_generator.state, "python": random.getstate()},
        }
        tmp = self.out / "ckpt.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.out / "ckpt.pt")
        self.since_ckpt_s = 0.0
        self.log(event="checkpoint", active_min=round(self.active_minutes(), 1))

    def load(self):
        state = torch.load(self.out / "ckpt.pt", weights_only=False)
        self.pipe.vae.register_to_config(
            latents_mean=state["vae_config"]["latents_mean"], latents_std=state["vae_config"]["latents_std"]
        )
        self.pipe.vae.load_state_dict(state["vae"])
        self.pipe.transformer.load_state_dict(state["transformer"])
        self.pipe.text_encoder.load_state_dict(state["text_encoder"])
        self.ema = state["ema"]
        self.stage, self.step = state["stage"], state["step"]
        self.pool_count, self.active_s, self.stage_s = state["pool_count"], state["active_s"], state["stage_s"]
        self.opt = self._optimizer("vae" if self.stage == "vae" else "dit")
        if self.stage in ("vae", "dit"):
            self.opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"]["torch"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        random.setstate(state["rng"]["python"])

    def rewind(self, stage: str):
        """Go back to `stage` keeping the weights (fresh optimizer and stage clock); a rewind to
        vae or stats drops the pool, which was encoded with the old VAE."""
        order = ["vae", "stats", "pool", "dit", "done"]
        if order.index(stage) > order.index(self.stage):
            sys.exit(f"cannot rewind from {self.stage} forward to {stage}")
        self.next_stage(stage)
        self.opt = self._optimizer("vae" if stage == "vae" else "dit")
        if order.index(stage) <= order.index("pool"):
            for shard in self.out.glob("pool_*.pt"):
                shard.unlink()
            self.pool_count = 0
        self.log(event="rewind", to=stage)

    def maybe_checkpoint(self) -> bool:
        """Checkpoint every few active minutes; True when this invocation should stop."""
        self.tick()
        over = self.args.max_minutes is not None and self.invocation_s >= 60 * self.args.max_minutes
        if over or self.stop or self.since_ckpt_s >= self.args.ckpt_minutes * 60:
            self.save()
        return over or self.stop

    def lr(self, base: float, progress: float, warmup: int) -> float:
        if self.step < warmup:
            return base * (self.step + 1) / warmup
        return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    # ------------------------------------------------------------ stage: vae
    def vae_batch(self) -> torch.Tensor:
        clips = []
        f, c = self.args.vae_frames, self.args.vae_crop
        for _ in range(self.args.vae_batch):
            scene = random_scene(self.rng, f, 64, 64)  # pixel scales as in the demo, then a crop
            frames, _ = render(scene)
            y, x = self.rng.integers(0, 64 - c + 1, 2)
            clip = torch.from_numpy(frames[:, y : y + c, x : x + c]).float().div(127.5).sub(1).permute(3, 0, 1, 2)
            if self.rng.random() < 0.3:  # the masked inputs VACE encodes: video * (1 - m) and video * m
                _, cover = render(SceneSpec(f, 64, 64, scene.pan, scene.shapes[-1:], scene.texture_seed))
                m = torch.from_numpy(make_mask(self.rng, cover)[:, y : y + c, x : x + c]).float()
                clip = clip * (m if self.rng.random() < 0.5 else 1 - m)
            clips.append(clip)
        return torch.stack(clips)  # [B, 3, F, C, C]

    def train_vae(self) -> bool:
        vae = self.pipe.vae.train()
        while self.progress(self.args.vae_steps, self.args.vae_minutes) < 1:
            for g in self.opt.param_groups:
                g["lr"] = self.lr(self.args.vae_lr, self.progress(self.args.vae_steps, self.args.vae_minutes), 100)
            x = self.vae_batch()
            rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
            l1, l2 = (rec - x).abs().mean(), (rec - x).pow(2).mean()
            loss = l1 + l2
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            self.opt.step()
            self.step += 1
            if self.step % 20 == 0:
                self.log(l1=round(l1.item(), 4), psnr=round(10 * math.log10(4 / l2.item()), 2), active_min=round(self.active_minutes(), 1))
            if self.maybe_checkpoint():
                return False
        vae.eval()
        self.next_stage("stats")
        self.save()
        return True

    # ------------------------------------------------------------ stage: latent statistics
    @torch.no_grad()
    def latent_stats(self):
        clips = [render(random_scene(self.rng, 17, 128, 128))[0] for _ in range(8)]
        self.pipe.vae.register_to_config(latents_mean=[0.0] * self.cfg.z_dim, latents_std=[1.0] * self.cfg.z_dim)
        z = torch.cat([target_latents(self.pipe, [c]) for c in clips])  # [N, z, T, h, w]
        mean = z.mean(dim=(0, 2, 3, 4))
        std = z.std(dim=(0, 2, 3, 4))
        self.pipe.vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
        self.log(latents_mean=[round(v, 3) for v in mean.tolist()], latents_std=[round(v, 3) for v in std.tolist()])
        self.log(vae_heldout_psnr_per_frame=vae_heldout_psnr(self.pipe))
        self.next_stage("pool")
        self.save()

    # ------------------------------------------------------------ stage: pool
    def pool_shard(self, index: int) -> Path:
        return self.out / f"pool_{index:05d}.pt"

    @torch.no_grad()
    def build_pool(self) -> bool:
        """Scenes in groups of `pool_group` of one bucket, encoded together; a scene's data depends
        on its index only (and its group's bucket on the group's index), so a resumed pool is the same."""
        self.pipe.vae.eval()
        group = self.args.pool_group
        while self.progress(self.args.pool_scenes, self.args.pool_minutes) < 1:
            first = self.step
            bucket = BUCKETS[np.random.default_rng([self.args.seed, 2, first // group]).choice(len(BUCKETS), p=BUCKET_WEIGHTS)]
            scenes = [random_edits(np.random.default_rng([self.args.seed, 1, first + j]), *bucket, n=self.args.edits_per_scene) for j in range(group)]
            conds = vace_conditioning_batch(self.pipe, [(e[0].source, e[0].mask) for e in scenes])
            if first == 0:  # the batched conditioning is the pipeline's, up to batched-conv rounding
                ref = vace_conditioning(self.pipe, scenes[0][0].source, scenes[0][0].mask)[0]
                err = (ref - conds[0]).abs().max().item()
                self.log(batched_conditioning_max_abs_err=err)
                if err > 1e-3:
                    sys.exit(f"batched VACE conditioning differs from the pipeline's by {err}")
            x0 = target_latents(self.pipe, [e.target for edits in scenes for e in edits])
            per = self.args.edits_per_scene
            for j, edits in enumerate(scenes):
                shard = {"cond": conds[j].half(), "x0": x0[j * per : (j + 1) * per].half(), "prompts": [e.prompt for e in edits]}
                torch.save(shard, self.pool_shard(first + j))
            self.step += group
            self.pool_count = self.step
            if self.step % (10 * group) == 0:
                self.log(scenes=self.step, bucket=bucket, active_min=round(self.active_minutes(), 1))
            if self.maybe_checkpoint():
                return False
        self.next_stage("dit")
        self.opt = self._optimizer("dit")
        self.save()
        return True

    # ------------------------------------------------------------ stage: dit
    def load_pool(self):
        prompts = {REMOVE_PROMPT, ""}
        shards = [torch.load(self.pool_shard(i)) for i in range(self.pool_count)]
        for s in shards:
            prompts.update(s["prompts"])
        names = sorted(prompts)
        with torch.no_grad():
            emb, _ = self.pipe.encode_prompt(names, do_classifier_free_guidance=False, max_sequence_length=TEXT_LEN, device=CPU)
        self.embeds = dict(zip(names, emb))
        self.buckets: dict[tuple, list] = {}
        for s in shards:
            for i, p in enumerate(s["prompts"]):
                self.buckets.setdefault(tuple(s["x0"].shape[1:]), []).append((s["cond"], s["x0"][i], p))
        self.log(pool={str(k): len(v) for k, v in self.buckets.items()}, prompts=len(names))

    def dit_batch(self):
        keys = sorted(self.buckets)
        sizes = np.array([len(self.buckets[k]) for k in keys], float)
        items = self.buckets[keys[self.rng.choice(len(keys), p=sizes / sizes.sum())]]
        pick = [items[i] for i in self.rng.integers(0, len(items), self.args.dit_batch)]
        cond = torch.stack([c for c, _, _ in pick]).float()
        x0 = torch.stack([x for _, x, _ in pick]).float()
        drop = self.rng.random(len(pick)) < self.args.prompt_dropout  # trains the unconditional branch for CFG
        text = torch.stack([self.embeds["" if d else p] for (_, _, p), d in zip(pick, drop)])
        return cond, x0, text

    def train_dit(self) -> bool:
        self.load_pool()
        tr = self.pipe.transformer.train()
        z = self.cfg.z_dim
        scale = torch.ones(len(self.cfg.vace_layers))
        shift = self.cfg.flow_shift
        while self.progress(self.args.dit_steps, self.args.dit_minutes) < 1:
            for g in self.opt.param_groups:
                g["lr"] = self.lr(self.args.dit_lr, self.progress(self.args.dit_steps, self.args.dit_minutes), 100)
            cond, x0, text = self.dit_batch()
            b = x0.shape[0]
            u = torch.rand(b)
            sigma = flow_sigma(u, shift)
            s = sigma.view(b, 1, 1, 1, 1)
            noise = torch.randn_like(x0)
            xt = (1 - s) * x0 + s * noise
            pred = tr(
                hidden_states=xt,
                timestep=sigma * 1000,
                encoder_hidden_states=text,
                control_hidden_states=cond,
                control_hidden_states_scale=scale,
                return_dict=False,
            )[0]
            inside = cond[:, 2 * z :].amax(dim=1, keepdim=True)  # [B, 1, T, h, w] latent-resolution mask
            weight = 1 + self.args.mask_weight * inside
            err = (pred - (noise - x0)).pow(2)
            loss = (err * weight).mean() / weight.mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tr.parameters(), 1.0)
            self.opt.step()
            with torch.no_grad():
                decay = min(self.args.ema, (1 + self.step) / (10 + self.step))
                for k, v in tr.state_dict().items():
                    self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            self.step += 1
            if self.step % 20 == 0:
                mse_in = (err * inside).sum() / inside.sum().clamp(min=1) / z
                self.log(loss=round(loss.item(), 4), mse_in=round(mse_in.item(), 4), active_min=round(self.active_minutes(), 1))
            if self.maybe_checkpoint():
                return False
        self.next_stage("done")
        self.save()
        return True

    def run(self):
        if self.stage == "vae" and not self.train_vae():
            return
        if self.stage == "stats":
            self.latent_stats()
        if self.stage == "pool" and not self.build_pool():
            return
        if self.stage == "dit" and not self.train_dit():
            return
        self.log(event="finished", active_min=round(self.active_minutes(), 1))
        self.export(self.out / "export")

    def export(self, path: Path, use_ema: bool = True):
        if use_ema and self.stage in ("dit", "done"):
            self.pipe.transformer.load_state_dict(self.ema)
        backend = getattr(self.pipe.tokenizer, "_tokenizer", None)
        if backend is not None:  # encode_prompt left padding/truncation state on the fast tokenizer
            backend.no_padding()
            backend.no_truncation()
        self.pipe.save_pretrained(path, safe_serialization=True)
        info = {"stage": self.stage, "step": self.step, "ema": use_ema, "config": self.cfg.to_dict(), "args": vars(self.args)}
        (Path(path) / "hetcache_training.json").write_text(json.dumps(info, indent=2) + "\n")
        print(f"exported {self.stage} step {self.step} to {path}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo_model", help="checkpoints, pool shards and log.jsonl")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    p.add_argument("--export", metavar="DIR", help="write the diffusers folder from OUT/ckpt.pt and exit")
    p.add_argument("--rewind", choices=["vae", "stats", "pool", "dit"], help="with --resume: redo from this stage, keeping weights")
    p.add_argument("--no-ema", action="store_true", help="export the raw transformer weights instead of the EMA")
    p.add_argument("--max-minutes", type=float, help="stop (after a checkpoint) past this many active minutes in this invocation")
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-minutes", type=float, default=14.0, help="active minutes of VAE training")
    p.add_argument("--pool-minutes", type=float, default=5.0, help="active minutes of pool encoding")
    p.add_argument("--dit-minutes", type=float, default=25.0, help="active minutes of transformer training")
    p.add_argument("--vae-steps", type=int, default=20000, help="step cap of the VAE stage")
    p.add_argument("--vae-batch", type=int, default=4)
    p.add_argument("--vae-frames", type=int, default=9, help="frames of a VAE training crop (4k+1)")
    p.add_argument("--vae-crop", type=int, default=32, help="side of a VAE training crop, pixels (<= 64)")
    p.add_argument("--vae-lr", type=float, default=5e-4)
    p.add_argument("--pool-scenes", type=int, default=500, help="scene cap of the pool")
    p.add_argument("--edits-per-scene", type=int, default=6)
    p.add_argument("--pool-group", type=int, default=4, help="scenes of one size encoded in one VAE batch")
    p.add_argument("--dit-steps", type=int, default=20000, help="step cap of the transformer stage")
    p.add_argument("--dit-batch", type=int, default=4)
    p.add_argument("--dit-lr", type=float, default=4e-4)
    p.add_argument("--mask-weight", type=float, default=3.0, help="extra loss weight inside the mask")
    p.add_argument("--prompt-dropout", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0.998)
    args = p.parse_args()
    torch.set_num_threads(THREADS)
    trainer = Trainer(args)
    if args.resume or args.export:
        if not (trainer.out / "ckpt.pt").is_file():
            sys.exit(f"no checkpoint at {trainer.out / 'ckpt.pt'}; run without --resume first")
        trainer.load()
    if args.rewind:
        trainer.rewind(args.rewind)
    if args.export:
        trainer.export(Path(args.export), use_ema=not args.no_ema)
        return

    def on_term(*_):
        trainer.stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    trainer.log(event="start", resume=args.resume, args=vars(args), config=asdict(trainer.cfg))
    trainer.run()


if __name__ == "__main__":
    main()
