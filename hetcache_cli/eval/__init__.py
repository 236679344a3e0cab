"""Quality evaluation: metrics between an edited video and a reference, split by mask region."""

from hetcache_cli.eval.metrics import (
    DEFAULT_MARGIN_PX,
    PSNR_CAP_DB,
    REGIONS,
    compare_videos,
    psnr,
    psnr_by_region,
    region_masks,
    ssim,
    ssim_by_region,
    ssim_map,
    warp_error,
    warp_error_by_region,
)
from hetcache_cli.eval.perceptual import lpips_status

__all__ = [
    "DEFAULT_MARGIN_PX", "PSNR_CAP_DB", "REGIONS", "compare_videos", "lpips_status", "psnr", "psnr_by_region",
    "region_masks", "ssim", "ssim_by_region", "ssim_map", "warp_error", "warp_error_by_region",
]  # fmt: skip
