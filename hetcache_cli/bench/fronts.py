"""Quality/FLOPs fronts from a threshold sweep, and reading them at a given FLOPs cut.

A point is (FLOPs cut, PSNR). The front of a method is its Pareto set: the points that no
other point of the method beats in both cut and PSNR, sorted by cut. Between two front
points the front is read by linear interpolation in the cut (what the issue's acceptance
asks; a mix of the two settings would land there only approximately). Outside the front's
cut range it has no value (None): a sweep must cover the range it is judged on.
"""

from __future__ import annotations

from typing import Iterable, Sequence

Point = tuple[float, float]  # (flops cut, psnr dB)


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """Points not dominated in (cut, psnr), sorted by cut ascending (psnr then descends).

    When the sweep's slowest point is dominated (a faster setting is also better), the front
    starts at the slowest swept cut with the best PSNR found at or above it: that quality is
    available there (by the faster setting), so the range the sweep covered stays covered.
    """
    points = list(points)
    front: list[Point] = []
    for cut, psnr in sorted(points, key=lambda p: (-p[0], -p[1])):  # fastest first
        if not front or psnr > front[-1][1]:
            front.append((cut, psnr))
    front.reverse()
    if front and points:
        slowest = min(cut for cut, _ in points)
        if slowest < front[0][0]:
            front.insert(0, (slowest, front[0][1]))
    return front


def front_at(front: Sequence[Point], cut: float) -> float | None:
    """The front's PSNR at `cut`, linear between neighbouring points; None outside [min cut, max cut]."""
    if not front or cut < front[0][0] - 1e-9 or cut > front[-1][0] + 1e-9:
        return None
    for (c0, p0), (c1, p1) in zip(front, front[1:]):
        if c0 <= cut <= c1:
            return p0 if c1 == c0 else p0 + (p1 - p0) * (cut - c0) / (c1 - c0)
    return front[-1][1] if abs(cut - front[-1][0]) <= 1e-9 else front[0][1]


def front_margin(better: Sequence[Point], other: Sequence[Point], lo: float, hi: float,
                 samples: int = 51) -> tuple[float | None, float | None]:
    """Smallest PSNR lead of `better` over `other` on cuts lo..hi (front points in range + an even grid).

    Returns (lead dB, at cut); lead is None when either front does not cover the whole range.
    """
    cuts = {lo + (hi - lo) * i / (samples - 1) for i in range(samples)}
    cuts |= {c for c, _ in list(better) + list(other) if lo <= c <= hi}
    worst: tuple[float | None, float | None] = (None, None)
    for cut in sorted(cuts):
        a, b = front_at(better, cut), front_at(other, cut)
        if a is None or b is None:
            return None, cut
        if worst[0] is None or a - b < worst[0]:
            worst = (a - b, cut)
    return worst
