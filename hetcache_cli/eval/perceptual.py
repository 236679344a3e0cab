"""LPIPS (AlexNet, v0.1), used only when it can run offline.

The `lpips` package downloads nothing for its own linear layers (they ship in the wheel)
but builds its AlexNet backbone through torchvision, which downloads the ImageNet weights
into the torch hub cache when they are missing. Evaluation never downloads: both files
are looked for first and LPIPS is skipped, with the reason, when either is absent. The
package is located with importlib's find_spec, so it is not even imported then.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

from hetcache_cli.eval.regions import Regions, pool_regions

__all__ = ["lpips_by_region", "lpips_status"]

# torchvision's AlexNet_Weights.IMAGENET1K_V1 file name in the hub cache.
_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
_BATCH_FRAMES = 8


def _find_spec(name: str):
    return importlib.util.find_spec(name)


def _hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def lpips_status() -> tuple[bool, str]:
    """(True, "") when LPIPS can run without a download, else (False, why not)."""
    spec = _find_spec("lpips")
    if spec is None or not spec.origin:
        return False, "the lpips package is not installed (pip install lpips torchvision)"
    weights = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    if not weights.is_file():
        return False, f"the LPIPS weights {weights} are missing; reinstall lpips"
    if _find_spec("torchvision") is None:
        return False, "torchvision, which lpips needs, is not installed"
    backbone = _hub_checkpoints() / _ALEXNET_FILE
    if not backbone.is_file():
        return False, f"the AlexNet weights {backbone} are not cached and evaluation never downloads"
    return True, ""


def lpips_by_region(pred: np.ndarray, ref: np.ndarray, regions: Regions) -> dict[str, float | None]:
    """Mean LPIPS distance per region from its spatial map (call lpips_status first)."""
    import lpips
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # lpips prints its set-up banner on stdout, which holds results only.
    with contextlib.redirect_stdout(sys.stderr):
        model = lpips.LPIPS(net="alex", version="0.1", spatial=True).to(device).eval()

    def to_tensor(frames: np.ndarray) -> torch.Tensor:
        # uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]
        return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def maps():
        with torch.no_grad():
            for start in range(0, ref.shape[0], _BATCH_FRAMES):
                stop = start + _BATCH_FRAMES
                dist = model(to_tensor(pred[start:stop]), to_tensor(ref[start:stop]))  # [B, 1, H, W]
                for i, m in enumerate(dist[:, 0].double().cpu().numpy()):
                    yield start + i, m, None

    return pool_regions(maps(), regions)
