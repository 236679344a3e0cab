"""A window's frames from rank 0 to the other ranks of a `--parallel` edit, as tensors.

The pipeline call's arguments go to the other ranks with `broadcast_object_list`, which pickles
them: for the window's video and mask (float32 [1, F, H, W, 3] each, 390 MB apiece at 81 x 480 x
832) that is a pickle, a copy into a byte tensor and an unpickle on every rank. `split_arrays`
takes them out of the arguments (their shapes and dtypes stay, under ARRAYS_KEY), `send_arrays` /
`receive_arrays` broadcast them as tensors (on the GPU under NCCL), and the mask, whose three
channels are the same 0/1 values, travels as one uint8 channel (1/12 of its bytes) and is rebuilt
exactly. `group` is a parallel_edit.ParallelGroup or a group_run.SubGroup: its `call`, `backend`,
`base` (the sending rank) and `group` (the process group, None for the whole launch).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ARRAYS_KEY", "receive_arrays", "rebuilt", "send_arrays", "split_arrays"]

ARRAYS_KEY = "_arrays"
FRAME_ARGS = ("video", "mask")


def _is_binary_rgb(mask: np.ndarray) -> bool:
    if mask.dtype != np.float32 or mask.shape[-1] != 3:
        return False
    first = mask[..., 0]
    return bool(((first == 0) | (first == 1)).all() and (mask == first[..., None]).all())


def split_arrays(kwargs: dict) -> tuple[dict, list[np.ndarray]]:
    """Rank 0: (the arguments without their frame arrays, the arrays to send in order)."""
    rest, arrays, specs = dict(kwargs), [], []
    for name in FRAME_ARGS:
        value = rest.get(name)
        if not isinstance(value, np.ndarray):
            continue
        del rest[name]
        if name == "mask" and _is_binary_rgb(value):
            value, how = value[..., 0].astype(np.uint8), "binary_rgb"
        else:
            how = "as_is"
        value = np.ascontiguousarray(value)
        arrays.append(value)
        specs.append((name, value.shape, value.dtype.str, how))
    rest[ARRAYS_KEY] = specs
    return rest, arrays


def _device(group):
    import torch

    if group.backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def send_arrays(group, arrays: list[np.ndarray]) -> None:
    """Rank 0: broadcast `arrays` (from `split_arrays`) to the group."""
    import torch
    import torch.distributed as dist

    device = _device(group)
    for array in arrays:
        tensor = torch.from_numpy(array).to(device)
        group.call("sending the window's frames", dist.broadcast, tensor, src=group.base, group=group.group)


def receive_arrays(group, kwargs: dict) -> dict:
    """Another rank: the arguments as rank 0 passed them, frame arrays received and rebuilt."""
    import torch
    import torch.distributed as dist

    device = _device(group)
    out = dict(kwargs)
    for name, shape, dtype, how in out.pop(ARRAYS_KEY, []):
        tensor = torch.empty(tuple(shape), dtype=torch.from_numpy(np.empty(0, np.dtype(dtype))).dtype, device=device)
        group.call("receiving the window's frames", dist.broadcast, tensor, src=group.base, group=group.group)
        out[name] = rebuilt(tensor.cpu().numpy(), how)
    return out


def rebuilt(array: np.ndarray, how: str) -> np.ndarray:
    """An array as `split_arrays` had it, from what was sent."""
    return np.repeat(array[..., None].astype(np.float32), 3, axis=-1) if how == "binary_rgb" else array
