"""Argument checks shared by the token-kernel wrappers; both backends run them.

Layout rule: token tensors [B, N, D] may have any batch and row strides but their rows
must be contiguous (stride(-1) == 1). Read-only inputs whose rows are not contiguous are
copied (`rows_contiguous`); tensors written in place are rejected (`check_writable`),
since a copy would silently drop the write.
"""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_tokens(op: str, name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{op}: {name} must be [B, N, D], got shape {_shape(t)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: {name} must be float32, float16 or bfloat16, got {t.dtype}")


def check_index(op: str, idx: torch.Tensor, ref: torch.Tensor, ref_name: str) -> None:
    if not isinstance(idx, torch.Tensor):
        raise ValueError(f"{op}: idx must be a torch.Tensor, got {type(idx).__name__}")
    if idx.dtype not in INDEX_DTYPES:
        raise ValueError(f"{op}: idx must be int32 or int64, got {idx.dtype}")
    if idx.dim() != 2 or idx.shape[0] != ref.shape[0]:
        raise ValueError(
            f"{op}: idx must be [B, M] with B = {ref.shape[0]} from {ref_name} {_shape(ref)}, "
            f"got idx {_shape(idx)}"
        )
    check_device(op, "idx", idx, ref, ref_name)


def check_device(op: str, name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; move both to one device")


def check_same(op: str, name: str, t: torch.Tensor, shape: tuple[int, ...], ref: torch.Tensor, ref_name: str) -> None:
    """`t` must have `shape`, and the dtype and device of `ref`."""
    check_tokens(op, name, t)
    if _shape(t) != shape:
        raise ValueError(f"{op}: {name} must have shape {shape} to match {ref_name} {_shape(ref)}, got {_shape(t)}")
    if t.dtype != ref.dtype:
        raise ValueError(f"{op}: {name} is {t.dtype} but {ref_name} is {ref.dtype}; cast one of them")
    check_device(op, name, t, ref, ref_name)


def check_writable(op: str, name: str, t: torch.Tensor) -> None:
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(
            f"{op}: {name} is written in place, so its rows must be contiguous (stride(-1) == 1); "
            f"got strides {t.stride()} for shape {_shape(t)}. Pass a tensor with contiguous rows."
        )


def rows_contiguous(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when its rows are contiguous, else a contiguous copy."""
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        return t.contiguous()
    return t


def validate_index_values(op: str, idx: torch.Tensor, n_tokens: int, unique: bool) -> None:
    """Range (and optionally uniqueness) of idx per batch row. Syncs with the device."""
    if idx.numel() == 0:
        return
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= n_tokens:
        raise ValueError(f"{op}: idx values must lie in [0, {n_tokens}), got min {low} and max {high}")
    if unique and idx.shape[1] > 1:
        ordered = idx.sort(dim=1).values
        repeats = ordered[:, 1:] == ordered[:, :-1]
        if bool(repeats.any()):
            row, col = (int(v) for v in repeats.nonzero()[0])
            raise ValueError(
                f"{op}: idx has a repeated index {int(ordered[row, col])} in batch row {row}; "
                "scattered rows must be distinct"
            )
