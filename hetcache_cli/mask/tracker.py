"""SAM 2 tracking of clicks and boxes through a clip, with transformers' `Sam2VideoModel`.

Weights come from a local folder or the local Hugging Face cache, never from the network (fetch
them once: `hf download facebook/sam2.1-hiera-tiny`). All prompts describe one object: it is
segmented on every prompt frame, then tracked forwards from the first prompt frame to the end of
the clip and backwards from there to frame 0, as `Sam2VideoModel.propagate_in_video_iterator` does.

Memory does not grow with the clip: frames are preprocessed `chunk_frames` at a time and dropped
once tracked, and the memory bank keeps the prompt frames plus the last
max(num_maskmem, max_object_pointers_in_encoder) tracked frames, all that the model reads back
(`_gather_memory_frame_outputs`, `_get_object_pointers`); the masks equal those of a session that
holds the whole clip (tests/mask/test_tracker.py).

Frames are prepared as the checkpoint's processor config says (bilinear antialiased resize to the
model's square input, rescale, mean/std normalisation) and prompt coordinates are scaled to that
size, as `Sam2VideoProcessor` does. The processor class itself is not used because its image
processor imports torchvision, which has no build for the CPU wheels of torch.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hetcache_cli.errors import InputError
from hetcache_cli.mask.job import DEFAULT_CHUNK_FRAMES, DEFAULT_TRACKER
from hetcache_cli.spec.prompts import Box, Point

__all__ = ["Preprocess", "Sam2Tracker", "TrackStats", "load_tracker", "resolve_tracker"]

logger = logging.getLogger(__name__)

# First one found wins; processor_config.json nests the image and video processor settings.
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OBJECT_ID = 1

ProgressFn = Callable[[int, int], None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~", "/"))


def resolve_tracker(name: str | None = None) -> Path:
    """The local folder of the SAM 2 weights `name` (a folder or a hub id in the local cache)."""
    name = name or DEFAULT_TRACKER
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(
                f"tracker folder {path} has no config.json; pass a SAM 2 folder saved with save_pretrained "
                f"or a hub id such as {DEFAULT_TRACKER}"
            )
        return path
    if not _looks_like_hub_id(name):
        raise InputError(
            f"tracker {name!r} is neither a folder nor a hub id (owner/name); use e.g. --tracker {DEFAULT_TRACKER}"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise InputError(
            f"SAM 2 weights {name!r} are not in the local Hugging Face cache; fetch them once with "
            f"`hf download {name}`, or pass a local folder with --tracker"
        ) from None


@dataclass(frozen=True)
class Preprocess:
    """Frame preparation: resize to size x size (bilinear, antialiased), x rescale, (x - mean) / std."""

    size: int
    rescale: float = 1 / 255
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_folder(cls, folder: Path, image_size: int) -> "Preprocess":
        """The settings in the model folder's processor config; the model's input size wins over the file's."""
        settings: dict = {}
        for name in PROCESSOR_FILES:
            path = folder / name
            if path.is_file():
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError) as exc:
                    raise InputError(f"{path} is not valid JSON ({_first_line(exc)}); fetch the tracker again") from None
                settings = data.get("video_processor") or data.get("image_processor") or data
                break
        size = settings.get("size") or {}
        if (size.get("height", image_size), size.get("width", image_size)) != (image_size, image_size):
            logger.warning("tracker processor size %s differs from the model's %d; using %d", size, image_size,
                           image_size)  # fmt: skip
        normalize = settings.get("do_normalize", True)
        return cls(
            size=int(image_size),
            rescale=float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else 1.0,
            mean=tuple(settings.get("image_mean", IMAGENET_MEAN)) if normalize else (0.0, 0.0, 0.0),
            std=tuple(settings.get("image_std", IMAGENET_STD)) if normalize else (1.0, 1.0, 1.0),
        )

    def __call__(self, frames: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """uint8 [n, H, W, 3] RGB -> [n, 3, size, size] model input."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round_().clamp_(0, 255) * self.rescale  # the processor resizes uint8 frames
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)


@functools.cache
def _session_class():
    from transformers import Sam2VideoInferenceSession

    class ClipSession(Sam2VideoInferenceSession):
        """A session holding only the frames in flight; `num_frames` stays the clip's length (the
        model bounds its object-pointer window with it)."""

        def __init__(self, clip_frames: int, **kwargs) -> None:
            super().__init__(**kwargs)
            self.clip_frames = clip_frames

        @property
        def num_frames(self) -> int:
            return self.clip_frames

    return ClipSession


class _FrameWindow:
    """Preprocessed frames in the session: `chunk` at a time in the direction of travel, each dropped once used."""

    def __init__(self, frames: np.ndarray, preprocess: Preprocess, session, chunk: int, device, dtype) -> None:
        self.frames, self.preprocess, self.session, self.chunk = frames, preprocess, session, chunk
        self.device, self.dtype = device, dtype
        self.peak = 0

    def held(self) -> int:
        return len(self.session.processed_frames or {})

    def ensure(self, t: int, step: int, count: int | None = None) -> None:
        if t in (self.session.processed_frames or {}):
            return
        n = self.chunk if count is None else count
        lo, hi = (t, min(t + n, len(self.frames))) if step > 0 else (max(t - n + 1, 0), t + 1)
        batch = self.preprocess(self.frames[lo:hi], self.device, self.dtype)
        for i, f in enumerate(range(lo, hi)):
            self.session.add_new_frame(batch[i], f)
        self.peak = max(self.peak, self.held())

    def drop(self, t: int) -> None:
        if self.session.processed_frames:
            self.session.processed_frames.pop(t, None)


@dataclass
class TrackStats:
    """What the last `track` call held at most: preprocessed frames and tracked-frame memories."""

    frames_held: int = 0
    memories_held: int = 0
    frames_tracked: int = 0


class Sam2Tracker:
    """A loaded SAM 2 video model and its frame preparation."""

    def __init__(self, model, preprocess: Preprocess, device: torch.device, dtype: torch.dtype, name: str) -> None:
        self.model, self.preprocess, self.device, self.dtype, self.name = model, preprocess, device, dtype, name
        cfg = model.config
        self.keep = max(int(cfg.num_maskmem), int(cfg.max_object_pointers_in_encoder))
        self.stats = TrackStats()

    def new_session(self, num_frames: int, height: int, width: int):
        return _session_class()(
            clip_frames=num_frames, video_height=height, video_width=width, inference_device=self.device,
            inference_state_device=self.device, video_storage_device=self.device, dtype=self.dtype,
        )  # fmt: skip

    def prompt_inputs(self, points: list[Point], boxes: list[Box], frame: int, height: int, width: int) -> dict:
        """The frame's prompts as the model's point inputs: the box corners first (labels 2, 3), then the
        clicks (1 = positive, 0 = negative), scaled to the model's input size."""
        sx, sy = self.preprocess.size / width, self.preprocess.size / height
        coords: list[tuple[float, float]] = []
        labels: list[int] = []
        for b in boxes:
            if b.frame == frame:
                coords += [(b.x0 * sx, b.y0 * sy), (b.x1 * sx, b.y1 * sy)]
                labels += [2, 3]
        for p in points:
            if p.frame == frame:
                coords.append((p.x * sx, p.y * sy))
                labels.append(1 if p.positive else 0)
        return {
            "point_coords": torch.tensor([[coords]], dtype=torch.float32),  # [1, 1, N, 2]
            "point_labels": torch.tensor([[labels]], dtype=torch.int64),  # [1, 1, N]
        }

    def frame_mask(self, pred_masks: torch.Tensor, height: int, width: int) -> np.ndarray:
        """Low-resolution mask logits [objects, 1, h, w] -> bool [H, W] (logit > 0, any object)."""
        logits = pred_masks.float()
        logits = F.interpolate(logits, size=(self.preprocess.size,) * 2, mode="bilinear", align_corners=False)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return (logits > 0).any(dim=0)[0].cpu().numpy()

    def track(
        self,
        frames: np.ndarray,
        points: list[Point],
        boxes: list[Box],
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """bool [F, H, W]: the object the prompts show, in every frame of `frames` (uint8 [F, H, W, 3])."""
        num_frames, height, width = frames.shape[:3]
        prompt_frames = sorted({p.frame for p in points} | {b.frame for b in boxes})
        if not prompt_frames:
            raise ValueError("tracking needs at least one point or box")
        session = self.new_session(num_frames, height, width)
        obj_idx = session.obj_id_to_idx(OBJECT_ID)
        memory = session.output_dict_per_obj[obj_idx]
        window = _FrameWindow(frames, self.preprocess, session, max(1, chunk_frames), self.device, self.dtype)
        self.stats = TrackStats()
        mask = np.zeros((num_frames, height, width), dtype=bool)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, num_frames)

        with torch.inference_mode():
            for f in prompt_frames:
                session.add_point_inputs(obj_idx, f, self.prompt_inputs(points, boxes, f, height, width))
                session.obj_with_new_inputs = [OBJECT_ID]
                window.ensure(f, 1, count=1)
                mask[f] = self.frame_mask(self.model(inference_session=session, frame_idx=f).pred_masks, height, width)
                memory["cond_frame_outputs"][f].pop("high_res_masks", None)
                window.drop(f)
                tick()
            prompted = set(prompt_frames)
            start = prompt_frames[0]
            for step in (1, -1):
                for t in range(start + 1, num_frames) if step > 0 else range(start - 1, -1, -1):
                    if t in prompted:
                        window.drop(t)
                        continue
                    window.ensure(t, step)
                    out = self.model(inference_session=session, frame_idx=t, reverse=step < 0)
                    mask[t] = self.frame_mask(out.pred_masks, height, width)
                    self._forget(memory["non_cond_frame_outputs"], t, step)
                    window.drop(t)
                    tick()
                # Each direction reads only its own tracked frames.
                memory["non_cond_frame_outputs"].clear()
        self.stats.frames_held = window.peak
        self.stats.frames_tracked = done
        return mask

    def _forget(self, outputs: dict, t: int, step: int) -> None:
        """Drop what the model never reads again: t's full-size masks and the memory `keep` frames back."""
        entry = outputs.get(t)
        if entry is not None:
            entry.pop("high_res_masks", None)
            entry.pop("pred_masks", None)
        outputs.pop(t - step * self.keep, None)
        self.stats.memories_held = max(self.stats.memories_held, len(outputs))


def load_tracker(name: str | None = None, device: str = "auto", dtype: str = "auto") -> Sam2Tracker:
    """Load SAM 2 from a folder or the local Hugging Face cache (`local_files_only`, never downloaded)."""
    import transformers
    from transformers.utils import logging as tlog

    if not hasattr(transformers, "Sam2VideoModel"):
        raise InputError(
            f"transformers {transformers.__version__} has no Sam2VideoModel; SAM 2 tracking needs a newer one: "
            "pip install -U transformers"
        )
    from transformers import Sam2VideoModel

    from hetcache_cli.pipeline.model import resolve_device, resolve_dtype

    name = name or DEFAULT_TRACKER
    folder = resolve_tracker(name)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    tlog.disable_progress_bar()  # the tracking bar is ours
    try:
        model = Sam2VideoModel.from_pretrained(folder, local_files_only=True, dtype=dt)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise InputError(
            f"cannot load the SAM 2 tracker {name!r} from {folder}: {_first_line(exc)}; pass a Sam2VideoModel "
            f"folder or a cached hub id such as {DEFAULT_TRACKER}"
        ) from None
    model.to(dev).eval()
    size = model.config.image_size
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    return Sam2Tracker(model, Preprocess.from_folder(folder, size), dev, dt, name)
