"""HetCache as a diffusers hook on `WanVACETransformer3DModel` (attached by apply.py).

One stateful `ModelHook` replaces the transformer's forward. Its caches live in a
`BranchState` per diffusers cache context ("cond" / "uncond"); what a run shares (plan,
token classes) lives in the hook's `RunState`. A two-expert pipeline (Wan2.2) gets one hook
per transformer, planned together by an `ExpertGroup` (experts.py). Offloading hooks keep
wrapping the compute (offload.py).

Run detection. Attached to a `WanVACEPipeline`, the group wraps the instance's
`prepare_masks`: every call of the pipeline passes there once, after `set_timesteps` and
before the loop, with the preprocessed pixel mask [1, C, F, H, W]. That is where a run
begins: the run's `CachePlan` is made (planning.plan_run: schedule, token counts, FLOPs, cache
layout within the memory bound) and every hook executes it from a fresh state; so a call that
raised mid-loop cannot leak into the next. The step index is `pipe.scheduler.step_index` (None = step 0).
On a bare transformer, call `handle.begin_run(timesteps)` (and `handle.set_mask(mask)`)
before each run; the step index is a per-branch forward counter. Without a pixel mask the
generative tokens come from the mask channels folded into `control_hidden_states`.
The pipeline's end-of-call `_reset_stateful_cache` calls `reset_state`, which frees the caches.
"""

from __future__ import annotations

import logging
import weakref

import torch
from diffusers.hooks.hooks import ModelHook, StateManager
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.utils import apply_lora_scale

from hetcache_cli.cache import engine
from hetcache_cli.cache import run as run_
from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.flops import forward_flops
from hetcache_cli.cache.plan import FULL, PARTIAL, REUSE, CachePlan, TokenPlan
from hetcache_cli.cache.planning import device_room, log_notes, plan_run
from hetcache_cli.cache.selection import ScoreProbe
from hetcache_cli.cache.state import BranchState, RunState
from hetcache_cli.cache.stats import StepStats, TokenCounts
from hetcache_cli.cache.storage import CacheLayout
from hetcache_cli.cache.text_kv import TextKV
from hetcache_cli.cache.ulysses import rows_per_rank as ulysses_rows
from hetcache_cli.kernels import build_slot_map

logger = logging.getLogger(__name__)

HOOK_NAME = "hetcache"


class HetCacheHook(ModelHook):
    """The forward of a Wan-VACE transformer with FULL / PARTIAL / REUSE steps; also the user's handle.

    It executes a `CachePlan` (plan.py): the plan of a pipeline call comes from its `ExpertGroup`
    (experts.py); on a bare transformer `begin_run` has one made by the same `planning.plan_run`.
    """

    _is_stateful = True

    def __init__(
        self, config: HetCacheConfig, stats: StepStats | None = None, pipeline=None, expert: str = "transformer"
    ) -> None:
        super().__init__()
        self.config = config
        self.stats = stats
        self.run = RunState()
        self.state_manager = StateManager(BranchState)
        self.group = None  # the ExpertGroup of a pipeline (experts.py), None on a bare transformer
        self._user_mask: tuple[torch.Tensor, int | None, int | None] | None = None
        self._pipeline = weakref.ref(pipeline) if pipeline is not None else None
        self._module = None
        self.expert = expert  # the pipeline component this hook is on
        self._raw_forward = None  # the transformer's own forward (set by offload.attach)
        self._bottom = None
        self.parallel = None  # a parallel.GuidanceParallel when each rank computes one guidance branch
        self.ulysses = None  # a ulysses.Ulysses when ranks share the tokens of a branch

    def initialize_hook(self, module):
        self._module = weakref.ref(module)
        return module

    @property
    def transformer(self):
        return self._module() if self._module is not None else None

    @property
    def pipeline(self):
        return self._pipeline() if self._pipeline is not None else None

    def reset_state(self, module):
        self.state_manager.reset()
        self.end_run()
        return module

    # ---- public handle API -------------------------------------------------------------

    @property
    def plan(self) -> CachePlan | None:
        """The plan this hook executes (None before a run is planned and after it ends)."""
        return self.run.plan

    @property
    def schedule(self) -> str | None:
        """The current run's plan as letters (e.g. 'FFPRPF'), None before it is planned."""
        return self.run.plan.schedule if self.run.plan is not None else None

    @property
    def n_active(self) -> int:
        """Tokens computed on a PARTIAL step of the current run (0 before its first forward)."""
        return run_.n_active(self.run)

    def set_mask(self, mask: torch.Tensor, spatial: int | None = None, temporal: int | None = None) -> None:
        """Pixel mask [F, H, W] (True / >0.5 = edit) for a bare transformer; kept until replaced.

        `spatial` (pixels per token side, default VAE 8 x patch) and `temporal` (pixel frames
        per latent frame, default 4) describe the VAE.
        """
        if mask.dim() != 3:
            raise ValueError(f"set_mask expects a [F, H, W] mask, got shape {tuple(mask.shape)}")
        self._user_mask = (mask > 0.5 if mask.is_floating_point() else mask.bool(), spatial, temporal)
        self.run.classes = None

    def begin_run(self, timesteps, branches: int = 2, n_tokens: int | None = None) -> list[str]:
        """Start a run on a bare transformer: caches dropped, the run planned (its decisions returned), stats reset.

        The plan's token counts are those of the mask, known at the first forward; with `n_tokens` the
        memory bound is checked now, before any step.
        """
        self.state_manager.reset()
        times = [float(t) for t in torch.as_tensor(timesteps).flatten().cpu()]
        self.run = RunState(run_id=self.run.run_id + 1, branches=branches, timesteps=times)
        tokens = TokenPlan(total=n_tokens or 0, active=n_tokens or 0)
        self._execute(self._plan(tokens), planned_tokens=n_tokens is not None and n_tokens > 0)
        return list(self.run.plan.decisions)

    # ---- run lifecycle -----------------------------------------------------------------

    def begin(self, plan: CachePlan, pixel_mask: torch.Tensor | None = None, factors=(None, None)) -> None:
        """Execute `plan` from the next forward on (a pipeline call's, from its ExpertGroup)."""
        self.state_manager.reset()
        self.run = RunState(run_id=self.run.run_id + 1, plan=plan, branches=plan.branches,
                            timesteps=list(plan.timesteps), pixel_mask=pixel_mask, factors=factors)  # fmt: skip

    def end_run(self) -> None:
        self.run = RunState(run_id=self.run.run_id + 1)

    def restart_run(self) -> None:
        """Same plan, fresh caches: a bare transformer starting its next run without `begin_run`."""
        old = self.run
        self.run = RunState(run_id=old.run_id + 1, plan=old.plan, branches=old.branches, timesteps=old.timesteps,
                            pixel_mask=old.pixel_mask, factors=old.factors)  # fmt: skip
        if self.stats is not None:
            self.stats.begin(old.plan)

    def _plan(self, tokens: TokenPlan, device: torch.device | None = None) -> CachePlan:
        """A bare transformer's plan (a pipeline's comes from its ExpertGroup), by the same planning function."""
        run, module = self.run, self.transformer
        timesteps = run.timesteps
        if timesteps is None and self.config.method == "none":
            timesteps = []  # every step is FULL: no plan of steps is needed
        elif timesteps is None:
            if self.config.schedule is None:
                raise ValueError(
                    "HetCache on a bare transformer needs the run's timesteps: call handle.begin_run(timesteps) "
                    "before the denoising loop, or set an explicit cache schedule"
                )
            timesteps = [float("nan")] * len(self.config.schedule)  # read from each step's input instead
        return plan_run({self.expert: module}, timesteps, self.config, tokens, branches=run.branches,
                        room=device_room([module], device))  # fmt: skip

    def _execute(self, plan: CachePlan, planned_tokens: bool = True) -> None:
        self.run.plan = plan
        self.run.extras["tokens_planned"] = planned_tokens
        if planned_tokens:
            log_notes(plan)
        if self.stats is not None:
            self.stats.begin(plan)

    def _ensure_plan(self, module, inputs) -> None:
        """At the run's first forward the mask's token classes are found on the device; a plan made without
        their counts (a bare transformer) or with other counts is made again, by the same function."""
        run = self.run
        if run.plan is None:
            self._execute(self._plan(TokenPlan(total=0, active=0)), planned_tokens=False)
        device = inputs.hidden_states.device
        run_.token_classes(run, self.config, module, inputs, self._user_mask)
        if run.extras.get("tokens_checked") == run.classes.grid:
            return
        counts = run_.class_counts(run)
        if run.plan.tokens != counts:
            if run.extras.get("tokens_planned"):
                logger.debug("token counts %s differ from the plan's %s: planning again", counts, run.plan.tokens)
            if self.group is not None:
                self.group.replan(counts)
            else:
                self._execute(self._plan(counts, device))
        run.extras["tokens_checked"] = run.classes.grid

    def new_forward(
        self,
        module,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        control_hidden_states: torch.Tensor | None = None,
        control_hidden_states_scale: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
    ):
        inputs = engine.Inputs(
            hidden_states,
            timestep,
            encoder_hidden_states,
            encoder_hidden_states_image,
            control_hidden_states,
            control_hidden_states_scale,
        )
        if self.group is not None:
            self.group.activate(self)
        branch = self.state_manager.context.name
        cfg = self.parallel
        if cfg is not None and not cfg.owns(branch):  # another rank computes this branch (parallel.py)
            out_channels = module.config.out_channels or module.config.in_channels
            output = cfg.foreign(branch, hidden_states, out_channels)
            return (output,) if not return_dict else Transformer2DModelOutput(sample=output)
        state: BranchState = self.state_manager.get_state()
        step = self._step_index(state)
        if state.run_id != self.run.run_id:
            state.reset()
            state.run_id = self.run.run_id
        state.forward_count += 1
        if cfg is not None:  # what the collectives of this forward serve (traffic count), before it fills the caches
            cfg.kind = kind = FULL if self.run.plan is None else self._decision(step, state)

        if self.config.method == "none" and self.stats is None and self.ulysses is None:
            output = self._original(inputs, attention_kwargs)
        else:
            output = self._forward(module, inputs, state, step, branch, attention_kwargs)
        if cfg is not None:
            output = cfg.computed(branch, output, kind)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def _original(self, inputs: engine.Inputs, attention_kwargs: dict | None) -> torch.Tensor:
        return self._raw_forward(
            hidden_states=inputs.hidden_states,
            timestep=inputs.timestep,
            encoder_hidden_states=inputs.encoder_hidden_states,
            encoder_hidden_states_image=inputs.encoder_hidden_states_image,
            control_hidden_states=inputs.control_hidden_states,
            control_hidden_states_scale=inputs.control_hidden_states_scale,
            return_dict=False,
            attention_kwargs=attention_kwargs,
        )[0]

    def _forward(self, module, inputs, state, step, branch, attention_kwargs) -> torch.Tensor:
        self._ensure_plan(module, inputs)
        run = self.run
        plan, classes = run.plan, run.classes
        for layout in (self.parallel, self.ulysses):
            if layout is not None:
                layout.comm.check_plan(run.run_id, plan.schedule, inputs.hidden_states.device)
        n_tokens = classes.n_tokens
        device = inputs.hidden_states.device
        decision = self._decision(step, state)
        timer = self.stats.start(device) if self.stats is not None else None

        text_layers = None  # blocks that projected the prompt's K/V in this forward (None: all)
        if plan.method == "none" and self.ulysses is None:
            output = self._original(inputs, attention_kwargs)
        else:
            n_main, n_vace = len(module.blocks), len(module.vace_blocks)
            layers = n_main + n_vace if plan.method == "hetcache" else 0
            heads = module.config.num_attention_heads
            shape = (inputs.hidden_states.shape[0], n_tokens, heads * module.config.attention_head_dim)  # [B, N, D]
            layout = plan.expert(self.expert).layout or CacheLayout(module.dtype, module.dtype)  # none: Ulysses only
            u = self.ulysses.u if self.ulysses is not None else 1  # token-sharded rows, head-sharded K/V
            rows = shape if u == 1 else (shape[0], ulysses_rows(n_tokens, u), shape[2])
            if plan.method != "none":  # `none` here is Ulysses alone: nothing is cached, nothing allocated
                state.ensure(layers, rows, layout, device, heads // u, kv_shape=(*shape[:2], shape[2] // u))
            if layout.text_kv and state.text is None:
                state.text = TextKV()
            if state.store is not None:  # the stack's layer order: VACE blocks, then main blocks
                state.store.begin(list(range(n_main, layers)) + list(range(n_main)), prefetch=decision == PARTIAL)
            before = state.text.computed if state.text is not None else 0
            output = _lora_scoped(module, self, decision, inputs, state, step, attention_kwargs=attention_kwargs)
            if state.text is not None:
                text_layers = state.text.computed - before
            if self.parallel is not None or self.ulysses is not None:
                (self.ulysses or self.parallel).comm.traffic.observe(branch, state)

        if self.stats is not None:
            self._record(module, inputs, timer, step, branch, decision, text_layers)
        return output

    def _record(self, module, inputs, timer, step: int, branch: str, decision: str, text_layers: int | None) -> None:
        """One statistics record: the plan's numbers for this step, unless the step ran otherwise than planned."""
        run = self.run
        planned = run.plan.step(step)
        g, m, c = run.classes.counts
        n_tokens = run.classes.n_tokens
        as_planned = planned is not None and planned.decision == decision and planned.expert == self.expert
        if as_planned and text_layers is not None:  # the plan has the prompt's K/V projected once per run
            first = next((s.step for s in run.plan.steps if s.expert == self.expert and s.decision != REUSE), None)
            as_planned = text_layers == ((len(module.blocks) + len(module.vace_blocks)) if step == first else 0)
        if as_planned:
            computed, flops, flops_full = planned.computed, planned.flops, planned.flops_full
        else:
            computed = {FULL: n_tokens, PARTIAL: run_.n_active(run), REUSE: 0}[decision]
            dims = run_.dims(run, module, inputs)
            flops, flops_full = forward_flops(dims, n_tokens, None if decision == FULL else computed, text_layers), \
                forward_flops(dims, n_tokens)
        self.stats.record(
            timer, step, self._timestep(step, inputs.timestep), branch, decision,
            TokenCounts(total=n_tokens, computed=computed, generative=g, margin=m, context=c), flops,
            expert=self.expert, flops_full=flops_full,
        )  # fmt: skip
        self.stats.observe_cache(self.expert, *self.cache_nbytes())

    def _timestep(self, step: int, timestep: torch.Tensor) -> float:
        planned = self.run.plan.step(step)
        if planned is not None and planned.timestep == planned.timestep:  # NaN: the plan was made without them
            return planned.timestep
        return float(timestep.flatten()[0])  # bare transformer without begin_run: one sync per step

    def cache_nbytes(self) -> tuple[int, int]:
        """(step caches, text K/V): bytes of the tensors this hook holds now, both branches, device and host."""
        sizes = [s.nbytes() for s in self.state_manager._state_cache.values()]
        return sum(b["cache"] for b in sizes), sum(b["text"] for b in sizes)

    def _decision(self, step: int, state: BranchState) -> str:
        plan = self.run.plan
        if plan.method == "none":
            return FULL
        planned = plan.step(step)
        decision = planned.decision if planned is not None else FULL
        if decision != FULL and not state.valid:
            logger.debug("step %d: no FULL step has filled the caches of this branch yet; computing FULL", step)
            decision = FULL
        return decision

    def _compute(self, module, decision: str, inputs: engine.Inputs, state: BranchState, step: int) -> torch.Tensor:
        run, config = self.run, self.config
        rope = run_.rope(run, module, inputs.hidden_states)
        t = self._timestep(step, inputs.timestep) if state.forecast is not None else None
        fw = self.ulysses or engine  # the same three forwards, sequence-parallel or in one process
        if decision == REUSE:
            return fw.forward_reuse(module, inputs, state, t)
        if decision == PARTIAL:
            if state.kv_forecast is not None:
                state.kv_forecast.begin_partial(t)
            return fw.forward_partial(module, inputs, rope, state, config.use_triton, t)
        if state.kv_forecast is not None:
            state.kv_forecast.begin_full(t, run.static_active)  # rows every PARTIAL step recomputes need no slope
        hetcache = run.plan.method == "hetcache"
        # One active set per step for all guidance branches: the first branch's FULL step chooses it, the
        # others take it. Different sets per branch would leave a token fresh in one branch and stale in
        # the other, and guidance (cond - uncond) x scale amplifies exactly that mismatch.
        shared = run.selection if hetcache and run.selection is not None and run.selection[0] == step else None
        receive = hetcache and shared is None and self.parallel is not None and not self.parallel.chooser
        probe = None
        classes = run.classes
        batch, device = inputs.hidden_states.shape[0], inputs.hidden_states.device
        if hetcache and shared is None and not receive and config.selection == "attention" and run.n_context_pick > 0:
            probe = ScoreProbe(
                classes.generative[None].expand(batch, -1),
                classes.context[None].expand(batch, -1),
                config.use_triton,
            )
        output = fw.forward_full(
            module, inputs, rope, state, hetcache, probe, run_.score_layer(config, len(module.blocks)), config.use_triton, t
        )
        if hetcache:
            if shared is not None:
                state.active, state.slot = shared[1], shared[2]
            else:
                state.active = run_.choose_active(run, config, state, probe, batch, device, self.parallel,
                                                  self.ulysses, receive)  # fmt: skip
                state.slot = build_slot_map(state.active, classes.n_tokens)
                run.selection = (step, state.active, state.slot)
            if self.ulysses is not None:
                self.ulysses.reorder(state, state.active, classes.n_tokens)
        state.valid = True
        return output

    def _step_index(self, state: BranchState) -> int:
        pipe = self.pipeline
        if pipe is not None:
            index = pipe.scheduler.step_index
            return 0 if index is None else int(index)
        plan = self.run.plan
        if plan is not None and plan.steps and state.run_id == self.run.run_id and state.forward_count >= len(plan.steps):
            self.restart_run()  # a bare transformer called for a new run without begin_run
        return state.forward_count if state.run_id == self.run.run_id else 0


@apply_lora_scale("attention_kwargs")
def _lora_scoped(module, hook: HetCacheHook, decision, inputs, state, step, attention_kwargs=None):
    # the LoRA scaling of the original forward (`attention_kwargs["scale"]`) around our compute
    return hook._compute(module, decision, inputs, state, step)
