"""Where a cached run's error comes from: every cached forward shadowed by the exact one on the same input.

`ShadowRecorder` is a `ClipRunner.run` observer. It wraps the HetCache hook's forward: after the
cached output it also runs the original diffusers forward on the same inputs (the local error
of that step's decision, free of the drift the earlier steps caused) and records both, with
the decision, the branch, the token classes and the step's active set. `step_rows` turns the
records into one row per step: the error of the guidance-combined noise prediction
(uncond + scale * (cond - uncond), what the scheduler uses) per token group, each branch's own
error, whether the branches computed the same tokens, and the drift of the step's input
latents from the uncached trajectory.
"""

from __future__ import annotations

import functools
import math

import torch

from hetcache_cli.cache import engine
from hetcache_cli.cache.tokens import CONTEXT, GENERATIVE, MARGIN

GROUPS = ("generative", "margin", "context computed", "context cached")


def tokens_of(out: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """Transformer output [1, C, T, H, W] -> one row per token [N, C * p_t * p_h * p_w] (rotary order)."""
    p_t, p_h, p_w = patch
    _, C, T, H, W = out.shape
    x = out[0].reshape(C, T // p_t, p_t, H // p_h, p_h, W // p_w, p_w)
    return x.permute(1, 3, 5, 0, 2, 4, 6).reshape((T // p_t) * (H // p_h) * (W // p_w), -1)


class ShadowRecorder:
    """Observer for `ClipRunner.run`: records cached and exact outputs of every forward."""

    def __init__(self, per_branch_selection: bool = False) -> None:
        # per_branch_selection: let every guidance branch choose its own active set (the engine before
        # issue 19), by dropping the shared selection before each uncond forward
        self.per_branch_selection = per_branch_selection
        self.records: list[dict] = []
        self.patch = (1, 2, 2)

    def __call__(self, hook, extras: dict) -> None:
        inner = hook.fn_ref.forward
        self.patch = tuple(hook.transformer.config.patch_size)

        def forward(module, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image=None,
                    control_hidden_states=None, control_hidden_states_scale=None, return_dict=True,
                    attention_kwargs=None):
            branch = hook.state_manager.context.name
            if self.per_branch_selection and branch != "cond":
                hook.run.selection = None
            out = inner(hidden_states=hidden_states, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                        encoder_hidden_states_image=encoder_hidden_states_image,
                        control_hidden_states=control_hidden_states,
                        control_hidden_states_scale=control_hidden_states_scale, return_dict=return_dict,
                        attention_kwargs=attention_kwargs)
            sample = out.sample if return_dict else out[0]
            inputs = engine.Inputs(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image,
                                   control_hidden_states, control_hidden_states_scale)
            exact = hook._original(inputs, attention_kwargs)
            state = hook.state_manager._state_cache.get(branch)
            record = hook.stats.records[-1]
            active = None
            if record.decision == "partial" and state is not None and state.active is not None:
                active = state.active[0].clone()
            self.records.append(dict(step=record.step, branch=branch, decision=record.decision,
                                     x=hidden_states.detach().clone(), out=sample.detach().clone(),
                                     exact=exact.detach().clone(), labels=hook.run.classes.labels.clone(),
                                     active=active))
            return out

        hook.fn_ref.forward = functools.partial(forward, hook.transformer)


def _active_mask(n: int, active: torch.Tensor | None) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    if active is not None:
        mask[active.cpu()] = True
    return mask


def step_rows(records: list[dict], guidance: float, reference: list[dict] | None = None,
              patch: tuple[int, int, int] = (1, 2, 2)) -> list[dict]:
    """One row per step: relative RMS error per group of the guidance-combined output, per branch, drift."""
    by_step: dict[int, dict[str, dict]] = {}
    for r in records:
        by_step.setdefault(r["step"], {})[r["branch"]] = r
    ref_x = {r["step"]: r["x"] for r in (reference or []) if r["branch"] == "cond"}
    rows = []
    for step in sorted(by_step):
        branches = by_step[step]
        cond = branches["cond"]
        out_c, ex_c = tokens_of(cond["out"], patch), tokens_of(cond["exact"], patch)
        if "uncond" in branches:
            unc = branches["uncond"]
            out_u, ex_u = tokens_of(unc["out"], patch), tokens_of(unc["exact"], patch)
            out, exact = out_u + guidance * (out_c - out_u), ex_u + guidance * (ex_c - ex_u)
        else:
            out, exact = out_c, ex_c
        scale = exact.pow(2).mean().sqrt()
        err = (out - exact).pow(2).mean(dim=1)  # [N]
        labels = cond["labels"].cpu()
        computed = _active_mask(labels.numel(), cond["active"])
        groups = {
            "generative": labels == GENERATIVE,
            "margin": labels == MARGIN,
            "context computed": (labels == CONTEXT) & computed,
            "context cached": (labels == CONTEXT) & ~computed,
        }
        row = {"step": step, "decision": cond["decision"]}
        for name, sel in groups.items():
            row[name] = float(err[sel].mean().sqrt() / scale) if sel.any() else math.nan
        for name, rec in branches.items():
            o, e = tokens_of(rec["out"], patch), tokens_of(rec["exact"], patch)
            row[f"branch {name}"] = float((o - e).pow(2).mean().sqrt() / e.pow(2).mean().sqrt())
        if "uncond" in branches and cond["decision"] == "partial":
            row["same active set"] = bool(torch.equal(computed, _active_mask(labels.numel(), branches["uncond"]["active"])))
        if step in ref_x:
            rx = ref_x[step]
            row["drift"] = float((cond["x"] - rx).pow(2).mean().sqrt() / rx.pow(2).mean().sqrt())
        rows.append(row)
    return rows


def by_decision(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of each group's error over the steps of each decision kind."""
    out = {}
    for decision in ("partial", "reuse"):
        sel = [r for r in rows if r["decision"] == decision]
        if sel:
            out[decision] = {g: _nanmean([r[g] for r in sel]) for g in GROUPS}
            out[decision]["steps"] = len(sel)
    return out


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan
