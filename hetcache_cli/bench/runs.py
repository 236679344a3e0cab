"""Running one bench method: attach the peer, run the edit (counted or timed), detach, put the pipeline back."""

from __future__ import annotations

import dataclasses
import logging

from hetcache_cli.bench.results import FAILED, MISSING, MethodResult
from hetcache_cli.bench.flops_counter import count_flops
from hetcache_cli.bench.peer_state import PipelineSnapshot
from hetcache_cli.bench.peers import capture_logs
from hetcache_cli.pipeline.edit import run_edit

logger = logging.getLogger(__name__)


class Runner:
    def __init__(self, prep, pipe, model_info: dict, progress=None) -> None:
        self.prep, self.pipe, self.model_info, self.progress = prep, pipe, model_info, progress
        self.steps = prep.spec.steps
        self._uncached = None
        self.shared: dict = {}  # what peers share across rows (MagCache's calibrated ratios)

    def result(self, method, prep) -> MethodResult:
        res = MethodResult(method, method.label, prep)
        if method.method == "none":
            self._uncached = prep
        if not method.is_peer:
            res.settings = prep.cache.to_dict()
            return res
        res.peer = method.peer()
        missing = res.peer.missing()
        if missing:
            res.status = MISSING
            res.note(missing)
        return res

    def check_hints(self, res: MethodResult) -> None:
        """The identical-input check of `vace_check` on the bare transformer; the pipeline is restored after."""
        snapshot = PipelineSnapshot(self.pipe)
        try:
            check = res.peer.check_hints(self.pipe.transformer)
        except Exception as exc:  # a peer that cannot even run the check fails in the real run too
            logger.info("%s: identical-input check failed: %s", res.label, exc)
            check = None
        finally:
            snapshot.restore()
        if check is not None:
            res.hint_check = check.to_dict() | {"description": check.describe()}

    def warmup(self, results: list[MethodResult]) -> None:
        device = self.pipe._execution_device
        if device.type == "cuda":
            for res in results:
                self.run(res, counted=False, label=f"warm-up {res.label}", keep=False)
            return
        short = dataclasses.replace(self.prep.spec, steps=min(2, self.steps))
        base = results[0]
        self._edit(dataclasses.replace(base.prep, spec=short), "warm-up")

    def run(self, res: MethodResult, counted: bool, label: str | None = None, keep: bool = True) -> None:
        """One run of `res`'s method; a peer's failure becomes the row's status instead of an exception."""
        if not res.runnable:
            return
        label = label or (f"{res.label} (counted)" if counted else res.label)
        peer = res.peer
        if peer is None:
            self._record(res, self._measured(res.prep, label, counted), counted, keep)
            return
        snapshot = PipelineSnapshot(self.pipe)
        try:
            with capture_logs("diffusers.hooks") as records:
                peer.prepare(self.pipe, self.steps, lambda: self._edit(self._uncached, f"{res.label} calibration"), self.shared)
                peer.attach(self.pipe, self.steps)
                try:
                    result = self._measured(res.prep, label, counted)
                finally:
                    peer.detach(self.pipe)
            for record in records:
                res.note(f"{record.name.rsplit('.', 1)[-1]} says: {record.getMessage().splitlines()[0]}")
            res.settings = peer.settings
            for note in peer.notes:
                res.note(note)
            if keep:
                self._record(res, result, counted, keep)
        except Exception as exc:
            res.status = FAILED
            res.note(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": "))
            logger.debug("%s failed", res.label, exc_info=True)
        finally:
            left = snapshot.leftovers()
            if left:
                res.note(f"left behind after detach (restored): {', '.join(left[:4])}" + (" ..." if len(left) > 4 else ""))
            snapshot.restore()

    def _measured(self, prep, label: str, counted: bool):
        if not counted:
            return self._edit(prep, label), None
        with count_flops(self.pipe.transformer) as flops:
            result = self._edit(prep, label)
        return result, flops.to_dict()

    def _record(self, res: MethodResult, measured, counted: bool, keep: bool) -> None:
        result, flops = measured
        if not keep:
            return
        if counted:
            res.flops, res.raw, res.stats, res.output = flops, result.raw, result.stats, str(result.output)
            return
        summary = result.stats["summary"]
        res.wall_s.append(summary["wall_s"])
        res.transformer_ms.append(summary["transformer_ms"])

    def _edit(self, prep, label: str):
        progress = self.progress
        if progress is not None:
            progress.start(label, prep.spec.steps)
        try:
            update = progress.update if progress is not None else None
            return run_edit(prep, self.pipe, self.model_info, progress=update, keep_frames=True)
        finally:
            if progress is not None:
                progress.stop()
