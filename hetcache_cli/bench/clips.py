"""The fidelity suite's clips, generated in code (nothing is stored): shapes, photo pans and zooms.

Every clip is a (frames uint8 [F, H, W, 3], mask bool [F, H, W], prompt) triple, deterministic.
They differ in what matters to a token cache: procedural textures (the demo model's world)
against photographs (sharp edges, fine detail the model never saw); a camera that pans or
zooms (every background token changes every frame) or barely moves; a mask that stays put
or follows an object; a mask of a few tokens or of a third of the frame.

Photographs come from scikit-image's bundled sample images (`pip install 'hetcache[suite]'`);
without scikit-image a photographic-like texture (1/f noise with edges) stands in and the
clip's description says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render


@dataclass
class SuiteClip:
    name: str
    description: str
    frames: np.ndarray  # [F, H, W, 3] uint8
    mask: np.ndarray  # [F, H, W] bool
    prompt: str

    @property
    def mask_fraction(self) -> float:
        return float(self.mask.mean())

    @property
    def moving_mask(self) -> bool:
        return bool((self.mask != self.mask[:1]).any())


def photograph(name: str) -> tuple[np.ndarray, str]:
    """An RGB uint8 sample photograph and where it came from."""
    try:
        from skimage import data
    except ImportError:
        seed = sum(map(ord, name))
        return _photo_like(np.random.default_rng(seed), 512, 512), "photographic-like texture (scikit-image missing)"
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]), f"scikit-image `{name}`"


def _photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    # 1/f amplitude spectrum (natural-image statistics) plus a few hard-edged rectangles
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width))
    out = np.empty((height, width, 3), np.float32)
    for c in range(3):
        phase = np.exp(2j * np.pi * rng.random((height, width)))
        img = np.real(np.fft.ifft2(amplitude * phase))
        out[..., c] = (img - img.mean()) / (img.std() + 1e-8) * 40 + rng.uniform(80, 170)
    for _ in range(12):
        y, x = rng.integers(0, height - 40), rng.integers(0, width - 40)
        h, w = rng.integers(16, 120), rng.integers(16, 120)
        out[y : y + h, x : x + w] = out[y : y + h, x : x + w] * 0.4 + rng.uniform(0, 255, 3) * 0.6
    return np.clip(out, 0, 255).astype(np.uint8)


def camera(image: np.ndarray, frames: int, height: int, width: int, start: tuple[float, float],
           velocity: tuple[float, float] = (0.0, 0.0), zoom: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """A moving window over `image`: centre `start` (y, x, pixels of the image) + t * velocity, zoom from..to.

    The window shows height / zoom x width / zoom image pixels, resampled (area-like) to height x width.
    """
    base = min(image.shape[0] / height, image.shape[1] / width) * 0.6  # image pixels per output pixel at zoom 1
    src = image.astype(np.float32)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        s = t / max(frames - 1, 1)
        scale = base / (zoom[0] + (zoom[1] - zoom[0]) * s)  # image pixels per output pixel
        cy, cx = start[0] + velocity[0] * t, start[1] + velocity[1] * t
        # output pixel (v, u) samples image pixel (cy + (v - h/2) * scale, cx + (u - w/2) * scale)
        m = np.float32([[scale, 0, cx - width / 2 * scale], [0, scale, cy - height / 2 * scale]])
        blurred = cv2.GaussianBlur(src, (0, 0), sigmaX=max(0.5 * scale - 0.3, 0.01))
        frame = cv2.warpAffine(blurred, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        out[t] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return out


def box_mask(frames: int, height: int, width: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """A static box given as fractions (top, bottom, left, right) of the frame."""
    top, bottom, left, right = box
    mask = np.zeros((frames, height, width), bool)
    mask[:, int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask


def disc_track(frames: int, height: int, width: int, start: tuple[float, float], velocity: tuple[float, float],
               radius: float) -> np.ndarray:
    """A disc that moves every frame: centre (y, x) in pixels + t * velocity, radius in pixels."""
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.zeros((frames, height, width), bool)
    for t in range(frames):
        cy, cx = start[0] + velocity[0] * t, start[1] + velocity[1] * t
        mask[t] = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return mask


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in mask])


def suite_clips(frames: int = 17, height: int = 128, width: int = 160) -> list[SuiteClip]:
    """The clips of the fidelity suite (names are stable: reports and docs refer to them)."""
    f, h, w = frames, height, width
    clips = []

    ball = MovingShape("ball", "white", radius=0.12 * h, start=(0.55 * h, 0.3 * w), velocity=(-0.3, 0.14 * w / 10))
    scene = SceneSpec(f, h, w, pan=(0.3, 0.8), shapes=[ball], texture_seed=7)
    video, cover = render(scene)
    path = _dilate(np.repeat(cover.max(axis=0, keepdims=True) > 0.02, f, axis=0), 4)
    clips.append(SuiteClip("shapes-path", "procedural texture, slow pan, a ball; static mask over its whole path "
                           "(the demo's kind)", video, path, "a red ball"))

    square = MovingShape("square", "green", radius=0.1 * h, start=(0.3 * h, 0.8 * w), velocity=(0.25, -0.35 * w / 10))
    scene = SceneSpec(f, h, w, pan=(0.0, 0.2), shapes=[square], texture_seed=21)
    video, cover = render(scene)
    clips.append(SuiteClip("shapes-track", "procedural texture, nearly still camera, a square; small mask "
                           "that follows it frame by frame", video, _dilate(cover > 0.02, 3), "a blue square"))

    image, source = photograph("astronaut")
    video = camera(image, f, h, w, start=(260.0, 180.0), velocity=(0.0, 3.0))
    clips.append(SuiteClip("photo-pan-large", f"camera pan over a photograph ({source}); large static box "
                           "(a third of the frame)", video, box_mask(f, h, w, (0.2, 0.8, 0.25, 0.8)), "a red box"))

    image, source = photograph("coffee")
    video = camera(image, f, h, w, start=(200.0, 300.0), zoom=(1.0, 1.35))
    track = disc_track(f, h, w, start=(0.35 * h, 0.25 * w), velocity=(0.15, 0.025 * w), radius=0.11 * h)
    clips.append(SuiteClip("photo-zoom-moving", f"camera zoom into a photograph ({source}); small disc mask "
                           "moving across it", video, track, "a yellow ball"))
    clips.append(window_clip(f, h, w))  # issue 26: a window that starts from known frames
    clips.append(crop_clip(h, w, f))  # issue 26: what `crop: auto` gives the model of a high-resolution clip
    return clips


def large_mask_clips(frames: int = 17, height: int = 128, width: int = 160) -> list[SuiteClip]:
    """Two more clips with a mask of a third of the frame, outside the default suite (`--clips` names them).

    They tell whether what photo-pan-large shows is the mask's size: the same box over a procedural
    texture with no object under it, and a large disc drifting over a nearly still photograph.
    """
    f, h, w = frames, height, width
    video, _ = render(SceneSpec(f, h, w, pan=(0.3, 0.8), shapes=[], texture_seed=5))
    box = SuiteClip("shapes-large", "procedural texture, slow pan, no object; large static box (a third of the "
                    "frame, photo-pan-large's)", video, box_mask(f, h, w, (0.2, 0.8, 0.25, 0.8)), "a red box")
    image, source = photograph("chelsea")
    video = camera(image, f, h, w, start=(150.0, 220.0), velocity=(0.5, 0.5))
    disc = disc_track(f, h, w, start=(0.5 * h, 0.35 * w), velocity=(0.0, 0.015 * w), radius=0.37 * h)
    still = SuiteClip("photo-still-large", f"nearly still camera over a photograph ({source}); large disc mask "
                      "(a third of the frame) drifting across it", video, disc, "a yellow ball")
    return [box, still]


def window_clip(frames: int = 17, height: int = 128, width: int = 160, overlap: int = 8) -> SuiteClip:
    """The second window of a windowed edit (pipeline/windows.py): its first frames are known.

    A ball crosses a panning texture over a clip twice a window long; the clip is the frames of the
    second window that `plan_windows` cuts, with its mask as `window_mask` gives it (0 on the known
    frames) and the known frames as the first window's edit left them (the ball already red).
    """
    from hetcache_cli.pipeline.windows import plan_windows, window_mask

    total = 2 * frames - 1
    window = plan_windows(total, frames, overlap)[1]
    ball = dict(radius=0.12 * height, start=(0.5 * height, 0.1 * width), velocity=(0.1, 0.8 * width / total))
    source, cover = render(SceneSpec(total, height, width, pan=(0.2, 0.6), texture_seed=11,
                                     shapes=[MovingShape("ball", "white", **ball)]))
    edited, _ = render(SceneSpec(total, height, width, pan=(0.2, 0.6), texture_seed=11,
                                 shapes=[MovingShape("ball", "red", **ball)]))
    video = source[window.start : window.stop].copy()
    video[: window.known] = edited[window.start : window.start + window.known]
    mask = window_mask(_dilate(cover > 0.02, 3)[window.start : window.stop], window)
    return SuiteClip("window-second", f"second window of a windowed edit: frames {window.start}-{window.stop - 1} "
                     f"of {total}, the first {window.known} known (mask 0, the first window's red ball), "
                     "procedural texture, panning camera, moving mask", video, mask, "a red ball")


def crop_clip(height: int = 128, width: int = 160, frames: int = 17, scale: float = 2.5) -> SuiteClip:
    """A crop of a high-resolution clip, as `crop: auto` makes it (io/crop.py), at the suite's token budget.

    A camera pans over a photograph at `scale` times the suite's size; a small disc moves across it.
    The model sees the box around the mask (grown by the paste band, times the crop context) scaled
    down to at most height x width pixels, as an edit of the high-resolution clip would give it.
    """
    from hetcache_cli.io.crop import crop_frames, crop_mask, crops_for_boxes, mask_box

    H, W = int(height * scale), int(width * scale)
    image, source = photograph("rocket")
    video = camera(image, frames, H, W, start=(220.0, 300.0), velocity=(0.5, 1.5))
    track = disc_track(frames, H, W, start=(0.4 * H, 0.35 * W), velocity=(0.1, 0.006 * W), radius=0.07 * H)
    (crop,) = crops_for_boxes([mask_box(track)], (H, W), context=2.0, min_size=int(0.6 * height * scale),
                              max_area=height * width, margin=4 + 2 * 4 + 2)
    return SuiteClip("photo-crop-hires", f"a crop of a {W}x{H} pan over a photograph ({source}): the box "
                     f"{crop.src_width}x{crop.src_height} around a small moving disc, worked at "
                     f"{crop.width}x{crop.height} (crop: auto)", crop_frames(video, crop), crop_mask(track, crop),
                     "a yellow ball")
