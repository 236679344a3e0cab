"""Video and mask input/output: decode, align to the model's shape rules, paste back, write."""

from hetcache_cli.io.align import AlignmentPlan, apply_alignment, plan_alignment
from hetcache_cli.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from hetcache_cli.io.mask import load_mask, mask_coverage
from hetcache_cli.io.paste import paste_back, paste_region
from hetcache_cli.io.video import VideoClip, read_video, write_video

__all__ = [
    "AlignmentPlan",
    "VideoClip",
    "apply_alignment",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_mask",
    "mask_coverage",
    "paste_back",
    "paste_region",
    "plan_alignment",
    "read_video",
    "write_video",
]
