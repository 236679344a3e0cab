"""The rules a window setting must follow (Wan runs on 4k+1 frames), checked when a spec is loaded.

Pure Python: `pipeline/windows.py` plans the windows, this module only says whether the settings can be.
"""

from __future__ import annotations

__all__ = ["FRAME_MULTIPLE", "MIN_WINDOW_FRAMES", "check_window_settings"]

FRAME_MULTIPLE = 4  # Wan: frames = 4k + 1 (the VAE's causal temporal grouping)
MIN_WINDOW_FRAMES = 5


def check_window_settings(window_frames: int, window_overlap: int) -> str | None:
    """The problem with a window setting, as a one-line message naming the fix; None when valid."""
    if window_frames < MIN_WINDOW_FRAMES:
        return (
            f"window_frames {window_frames} is below the minimum {MIN_WINDOW_FRAMES}; "
            f"use --window-frames {MIN_WINDOW_FRAMES} or more (4k+1, e.g. 17, 33 or 81)"
        )
    if (window_frames - 1) % FRAME_MULTIPLE:
        below = (window_frames - 1) // FRAME_MULTIPLE * FRAME_MULTIPLE + 1
        options = [v for v in (below, below + FRAME_MULTIPLE) if v >= MIN_WINDOW_FRAMES]
        return (
            f"window_frames {window_frames} is not 4k+1 (the model runs on 4k+1 frames); "
            f"use --window-frames {' or '.join(map(str, options))}"
        )
    if window_overlap < 0:
        return f"window_overlap {window_overlap} is negative; use --window-overlap 0 or more (e.g. 16)"
    if window_overlap >= window_frames:
        return (
            f"window_overlap {window_overlap} must be below window_frames {window_frames} (each window must edit "
            f"new frames); use --window-overlap {max(0, window_frames // 5)} or a larger --window-frames"
        )
    return None
