"""Build a two-expert (Wan2.2 VACE-Fun layout) model folder from the embedded demo model.

The folder has everything the embedded model has, plus `transformer_2` (the low-noise expert)
and `boundary_ratio` in `model_index.json`, so `WanVACEPipeline.from_pretrained` loads it as it
loads Wan2.2 VACE-Fun A14B: `transformer` runs the timesteps >= boundary_ratio x 1000,
`transformer_2` the rest. The second expert is the demo transformer with its weights perturbed
by seeded noise (`--perturb` x each tensor's standard deviation), so that the two experts
differ measurably and still edit like the demo model. A plumbing fixture for the two-expert
path, not a trained low-noise expert.

    python scripts/make_two_expert_model.py runs/two_expert_model
    hetcache edit assets/demo/input.mp4 --mask assets/demo/mask.png --prompt "a red ball" \\
        --model runs/two_expert_model --preset fast
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hetcache_cli.resources import embedded_model_dir  # noqa: E402

A14B_BOUNDARY = 0.875  # Wan2.2 VACE-Fun A14B's model_index.json


def perturbed(transformer, scale: float, seed: int):
    """A copy of `transformer` with N(0, (scale * std)^2) added to every floating tensor of more than one value."""
    out = copy.deepcopy(transformer)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in out.parameters():
            if param.is_floating_point() and param.numel() > 1:
                noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
                param.add_((noise * scale * param.float().std()).to(param.dtype))
    return out


def build(out: Path, boundary_ratio: float, scale: float, seed: int, source: Path | None = None) -> Path:
    from diffusers import AutoencoderKLWan, WanVACEPipeline
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    source = source or embedded_model_dir()
    vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", dtype=torch.float32)
    pipe = WanVACEPipeline.from_pretrained(source, vae=vae, dtype=torch.float32)
    two = WanVACEPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        transformer=pipe.transformer,
        transformer_2=perturbed(pipe.transformer, scale, seed),
        boundary_ratio=boundary_ratio,
    )
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    two.save_pretrained(tmp)
    for name in ("hetcache_defaults.json",):  # the demo model's recommended sampling settings
        if (source / name).is_file():
            shutil.copy2(source / name, tmp / name)
    (tmp / "hetcache_two_experts.json").write_text(json.dumps(
        {"source": "embedded demo model", "boundary_ratio": boundary_ratio, "perturb": scale, "seed": seed},
        indent=2,
    ) + "\n")  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (replaced if it exists)")
    parser.add_argument("--boundary-ratio", type=float, default=A14B_BOUNDARY,
                        help=f"timesteps >= this x 1000 run on `transformer` [default: {A14B_BOUNDARY}, as A14B]")
    parser.add_argument("--perturb", type=float, default=0.02, help="noise on transformer_2, x each tensor's std")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0.0 < args.boundary_ratio < 1.0:
        parser.error(f"--boundary-ratio {args.boundary_ratio} must be between 0 and 1")
    if args.perturb < 0:
        parser.error(f"--perturb {args.perturb} must be >= 0")
    path = build(args.out, args.boundary_ratio, args.perturb, args.seed)
    print(f"wrote {path} (transformer + transformer_2, boundary_ratio {args.boundary_ratio})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
