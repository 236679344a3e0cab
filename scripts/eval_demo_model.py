"""Acceptance measurement of a demo model on held-out procedural edits (seeds the training never used).

    python scripts/eval_demo_model.py runs/demo_model/export
    python scripts/eval_demo_model.py assets/model --scenes 4 --json runs/eval.json

Every edit runs through the real `WanVACEPipeline` call (loaded with hetcache's `load_pipeline`,
the CLI's default steps and guidance for that model folder, no paste-back). Per edit, against the generator's ground truth:
  psnr_in    inside the mask: the model vs trivial fills (mean colour of the unmasked area per frame;
             temporal fill from the nearest frame where the pixel is unmasked, else the mean colour)
  psnr_bg    outside the mask, the model against the source (the pipeline regenerates everything)
  colour     "a red X" vs "a blue X" on the same clip: mean RGB on the object nearer the named colour
             than the other one, and the two outputs differ along red - blue
Prints a table and writes JSON; exit status 0 whether or not the model passes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2
import numpy as np
import PIL.Image
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from hetcache_cli.io.synthetic import COLORS, SceneSpec, render  # noqa: E402
from hetcache_cli.pipeline.model import ModelRef, load_pipeline  # noqa: E402
from hetcache_cli.spec.load import model_defaults  # noqa: E402
from hetcache_cli.spec.schema import EditSpec  # noqa: E402
from demo_data import make_mask, make_target, mask_pil, random_scene  # noqa: E402

DEFAULTS = {f.name: f.default for f in dataclasses.fields(EditSpec)}
EVAL_STREAM = 7  # rng stream id; training uses default_rng(seed) and default_rng([seed, 1, i])


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """PSNR in dB over the pixels where `where` ([F, H, W] bool) holds; uint8 images."""
    diff = (a.astype(np.float64) - b.astype(np.float64))[where]
    mse = float((diff**2).mean()) if diff.size else 0.0
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def mean_fill(source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = source.copy()
    for t in range(len(source)):
        keep = ~mask[t]
        colour = source[t][keep].mean(axis=0) if keep.any() else source.reshape(-1, 3).mean(axis=0)
        out[t][mask[t]] = np.round(colour).astype(np.uint8)
    return out


def temporal_fill(source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each masked pixel from the nearest frame where it is unmasked (mean colour where none is)."""
    out = mean_fill(source, mask)
    f = len(source)
    for t in range(f):
        todo = mask[t].copy()
        for d in range(1, f):
            for s in (t - d, t + d):
                if 0 <= s < f:
                    take = todo & ~mask[s]
                    out[t][take] = source[s][take]
                    todo &= ~take
            if not todo.any():
                break
    return out


def run_edit(pipe, source: np.ndarray, mask: np.ndarray, prompt: str, args) -> np.ndarray:
    f, h, w = mask.shape
    out = pipe(
        prompt=prompt,
        negative_prompt=args.negative_prompt,
        video=[PIL.Image.fromarray(x) for x in source],
        mask=mask_pil(mask),
        height=h,
        width=w,
        num_frames=f,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return (np.clip(out.frames[0], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def eval_cases(args):
    """(name, scene, mask) for the demo clip and held-out random scenes (object never red or blue)."""
    from make_demo_assets import demo_scene

    cases = []
    demo = demo_scene()
    _, cover = render(demo)
    region = cv2.dilate((cover.max(axis=0) > 0.02).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    cases.append(("demo", demo, np.repeat(region[None].astype(bool), demo.frames, axis=0)))
    f, h, w = args.size
    for i in range(args.scenes):
        rng = np.random.default_rng([args.seed, EVAL_STREAM, i])
        scene = random_scene(rng, f, h, w)
        obj = scene.shapes[-1]
        obj.color = str(rng.choice([c for c in COLORS if c not in ("red", "blue")]))
        _, obj_cover = render(SceneSpec(f, h, w, scene.pan, [obj], scene.texture_seed))
        kind = ("path", "track", "box")[i % 3]
        cases.append((f"s{i}-{kind}", scene, make_mask(rng, obj_cover, kind)))
    return cases


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="diffusers Wan-VACE folder (e.g. runs/demo_model/export)")
    p.add_argument("--scenes", type=int, default=3, help="held-out random scenes besides the demo clip")
    p.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(17, 160, 160), help="FxHxW")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--steps", type=int, help="default: the CLI's for this model")
    p.add_argument("--guidance", type=float, help="default: the CLI's for this model (hetcache_defaults.json, else 5)")
    p.add_argument("--margin-db", type=float, default=2.0, help="required PSNR lead over the best trivial fill")
    p.add_argument("--json", default="runs/eval_demo_model.json")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    cli = {**DEFAULTS, **model_defaults(args.model_dir)}
    args.steps = cli["steps"] if args.steps is None else args.steps
    args.guidance = cli["guidance_scale"] if args.guidance is None else args.guidance
    args.negative_prompt = cli["negative_prompt"]
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(ModelRef(args.model_dir, Path(args.model_dir)), torch.device("cpu"), torch.float32)

    rows, colour_tests = [], []
    for name, scene, mask in eval_cases(args):
        source, _ = render(scene)
        obj = scene.shapes[-1]
        outs = {}
        for kind, colour in (("recolor", "red"), ("recolor", "blue"), ("remove", None)):
            if name == "demo" and kind == "remove":
                continue
            target, prompt, cover = make_target(scene, source, mask, kind, colour or "gray", obj.shape)
            start = time.perf_counter()
            edited = run_edit(pipe, source, mask, prompt, args)
            wall_s = time.perf_counter() - start
            row = {
                "case": name,
                "prompt": prompt,
                "mask_coverage": float(mask.mean()),
                "psnr_in": psnr(edited, target, mask),
                "psnr_in_mean_fill": psnr(mean_fill(source, mask), target, mask),
                "psnr_in_temporal_fill": psnr(temporal_fill(source, mask), target, mask),
                "psnr_in_copy_source": psnr(source, target, mask),
                "psnr_bg": psnr(edited, source, ~mask),
                "wall_s": wall_s,
            }
            if colour is not None:
                on = cover > 0.5
                row["object_rgb"] = [float(v) for v in edited[on].mean(axis=0)] if on.any() else None
                outs[colour] = row["object_rgb"]
            rows.append(row)
            print(f"{name:10s} {prompt:18s} in {row['psnr_in']:5.2f} dB (fills {row['psnr_in_mean_fill']:5.2f} / "
                  f"{row['psnr_in_temporal_fill']:5.2f}) bg {row['psnr_bg']:5.2f} dB  {wall_s:5.1f}s", flush=True)
        if outs.get("red") and outs.get("blue"):
            red, blue = np.float64(COLORS["red"]), np.float64(COLORS["blue"])
            r, b = np.float64(outs["red"]), np.float64(outs["blue"])
            ok_r = np.linalg.norm(r - red) < np.linalg.norm(r - blue)
            ok_b = np.linalg.norm(b - blue) < np.linalg.norm(b - red)
            ok_d = float(np.dot(r - b, red - blue)) > 0  # the prompt moved the colour the right way
            colour_tests.append({"case": name, "red_prompt_rgb": outs["red"], "blue_prompt_rgb": outs["blue"],
                                 "red_ok": bool(ok_r), "blue_ok": bool(ok_b), "direction_ok": bool(ok_d)})

    def avg(key, sel=lambda r: True):
        vals = [r[key] for r in rows if sel(r)]
        return float(np.mean(vals)) if vals else float("nan")

    best_fill = float(np.mean([max(r["psnr_in_mean_fill"], r["psnr_in_temporal_fill"]) for r in rows]))
    summary = {
        "psnr_in": avg("psnr_in"),
        "psnr_in_best_trivial_fill": best_fill,
        "psnr_in_mean_fill": avg("psnr_in_mean_fill"),
        "psnr_in_temporal_fill": avg("psnr_in_temporal_fill"),
        "psnr_in_copy_source": avg("psnr_in_copy_source"),
        "psnr_in_remove": avg("psnr_in", lambda r: r["prompt"] == "empty background"),
        "psnr_in_recolor": avg("psnr_in", lambda r: r["prompt"] != "empty background"),
        "psnr_bg": avg("psnr_bg"),
        "colour_pass": sum(t["red_ok"] + t["blue_ok"] + t["direction_ok"] for t in colour_tests),
        "colour_total": 3 * len(colour_tests),
        "wall_s_per_edit": avg("wall_s"),
    }
    checks = {
        "beats_trivial_fills": summary["psnr_in"] >= best_fill + args.margin_db,
        "background_25db": summary["psnr_bg"] >= 25.0,
        "colour_follows_prompt": summary["colour_pass"] == summary["colour_total"],
    }
    print()
    print(f"{'metric':34s} value")
    for k, v in summary.items():
        print(f"{k:34s} {v:.2f}" if isinstance(v, float) else f"{k:34s} {v}")
    for t in colour_tests:
        rr = ", ".join(f"{v:.0f}" for v in t["red_prompt_rgb"])
        bb = ", ".join(f"{v:.0f}" for v in t["blue_prompt_rgb"])
        print(f"colour {t['case']:10s} 'red' -> ({rr}) {'ok' if t['red_ok'] else 'FAIL'}   "
              f"'blue' -> ({bb}) {'ok' if t['blue_ok'] else 'FAIL'}   direction {'ok' if t['direction_ok'] else 'FAIL'}")
    for k, v in checks.items():
        print(f"check {k:28s} {'PASS' if v else 'FAIL'}")
    doc = {"model": args.model_dir, "settings": {k: v for k, v in vars(args).items() if k != "json"},
           "summary": summary, "checks": checks, "colour_tests": colour_tests, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
