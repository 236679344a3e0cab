"""Procedural clips: textured backgrounds with camera motion and moving coloured shapes.

Used for the demo clip, the tests and the demo model's training data. Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "orange": (240, 140, 30),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
}
SHAPES = ("ball", "square", "triangle", "ring")


@dataclass
class MovingShape:
    shape: str
    color: str
    radius: float  # pixels
    start: tuple[float, float]  # (y, x) centre in the first frame, pixels
    velocity: tuple[float, float]  # (dy, dx) pixels per frame

    def centre(self, t: int) -> tuple[float, float]:
        return self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t

    @property
    def prompt(self) -> str:
        return f"a {self.color} {self.shape}"


@dataclass
class SceneSpec:
    frames: int
    height: int
    width: int
    pan: tuple[float, float] = (0.0, 0.0)  # camera (dy, dx) pixels per frame
    shapes: list[MovingShape] = field(default_factory=list)
    texture_seed: int = 0


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth coloured texture, float32 [H, W, 3] in 0..255."""
    out = np.zeros((height, width, 3), np.float32)
    base = rng.uniform(60, 190, size=3)
    for scale, amplitude in ((40, 45.0), (16, 18.0), (6, 6.0)):
        noise = rng.normal(0.0, 1.0, size=(height // scale + 2, width // scale + 2, 3)).astype(np.float32)
        up = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
        out += up * amplitude
    return np.clip(out + base, 0, 255)


def shape_mask(shape: str, centre: tuple[float, float], radius: float, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage of a shape, float32 [H, W] in 0..1 (4x supersampled)."""
    s = 4
    canvas = np.zeros((height * s, width * s), np.uint8)
    cy, cx, r = centre[0] * s, centre[1] * s, radius * s
    if shape == "ball":
        cv2.circle(canvas, (int(cx), int(cy)), int(r), 255, -1)
    elif shape == "ring":
        cv2.circle(canvas, (int(cx), int(cy)), int(r), 255, -1)
        cv2.circle(canvas, (int(cx), int(cy)), int(r * 0.55), 0, -1)
    elif shape == "square":
        h = r * 0.85
        cv2.rectangle(canvas, (int(cx - h), int(cy - h)), (int(cx + h), int(cy + h)), 255, -1)
    elif shape == "triangle":
        pts = np.array([[cx, cy - r], [cx - r * 0.95, cy + r * 0.8], [cx + r * 0.95, cy + r * 0.8]], np.int32)
        cv2.fillPoly(canvas, [pts], 255)
    else:
        raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def render(scene: SceneSpec, with_shapes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [F, H, W, 3], per-frame union of the shapes' coverage float32 [F, H, W])."""
    rng = np.random.default_rng(scene.texture_seed)
    f, h, w = scene.frames, scene.height, scene.width
    extra_y = int(abs(scene.pan[0]) * f) + 1
    extra_x = int(abs(scene.pan[1]) * f) + 1
    world = texture(rng, h + extra_y, w + extra_x)
    frames = np.empty((f, h, w, 3), np.uint8)
    cover = np.zeros((f, h, w), np.float32)
    for t in range(f):
        oy = scene.pan[0] * t if scene.pan[0] >= 0 else extra_y - 1 + scene.pan[0] * t
        ox = scene.pan[1] * t if scene.pan[1] >= 0 else extra_x - 1 + scene.pan[1] * t
        m = np.float32([[1, 0, -ox], [0, 1, -oy]])
        img = cv2.warpAffine(world, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if with_shapes:
            for sh in scene.shapes:
                alpha = shape_mask(sh.shape, sh.centre(t), sh.radius, h, w)
                img = img * (1 - alpha[..., None]) + np.float32(COLORS[sh.color]) * alpha[..., None]
                cover[t] = np.maximum(cover[t], alpha)
        frames[t] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return frames, cover
