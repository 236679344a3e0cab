"""The comparison video: three panels, the source's frame count and rate, a heat map black where the videos agree."""

from fractions import Fraction

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hetcache_cli.cli.eval import EPILOG, eval_cmd
from hetcache_cli.io.video import read_video, write_video
from hetcache_cli.report.draw import LABEL_PX, OUTLINE_RGB, heat_map, outline
from hetcache_cli.report.side_by_side import compose_frame, panel_size

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
app.command("eval", epilog=EPILOG)(eval_cmd)
app.command("noop")(lambda: None)
runner = CliRunner()
LABELS = ("reference", "prediction", "difference")


def frames(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def heat_panel(frame, h, w):
    return frame[LABEL_PX:, 2 * w : 3 * w]


def test_heat_map_is_black_exactly_where_the_frames_agree():
    a = frames(1, 16, 24)[0]
    b = a.copy()
    assert not heat_map(a, b, 4.0).any()
    b[3:5, 7:9, 1] ^= 1  # one level off in one channel
    heat = heat_map(a, b, 4.0).any(axis=-1)
    assert heat[3:5, 7:9].all() and heat.sum() == 4
    full = heat_map(np.zeros_like(a), np.full_like(a, 255), 4.0)
    assert (full == 255).all()  # saturates to white


def test_outline_is_the_mask_edge():
    mask = np.zeros((10, 12), bool)
    mask[2:7, 3:9] = True
    edge = outline(mask)
    assert edge.sum() == 2 * 6 + 2 * 5 - 4 and not edge[3:6, 4:8].any() and (edge <= mask).all()
    assert not outline(np.zeros((4, 4), bool)).any()


@pytest.mark.parametrize("size", [(48, 64), (37, 51), (1080, 1920)])
def test_three_panels_and_a_black_heat_map_for_identical_frames(size):
    h, w = size
    ref = frames(1, h, w)[0]
    mask = np.zeros((h, w), bool)
    mask[h // 4 : h // 2, w // 4 : w // 2] = True
    ph, pw = panel_size(h, w)
    assert ph % 2 == 0 and pw % 2 == 0 and 3 * pw <= 1920
    out = compose_frame(ref, ref.copy(), None, LABELS)
    assert out.shape == (LABEL_PX + ph, 3 * pw, 3)
    assert not heat_panel(out, ph, pw).any()
    out = compose_frame(ref, ref.copy(), mask, LABELS)
    heat = heat_panel(out, ph, pw)
    drawn = (heat == OUTLINE_RGB).all(axis=-1)
    assert drawn.any() and not heat[~drawn].any()  # only the outline is drawn on a black panel


def test_eval_side_by_side_keeps_frame_count_and_exact_rate(tmp_path):
    clip = frames(7, 40, 56, seed=1)
    src, mask = tmp_path / "src.mp4", tmp_path / "mask.png"
    write_video(src, clip, Fraction(30000, 1001), lossless=True)
    m = np.zeros((40, 56), np.uint8)
    m[10:30, 20:40] = 255
    cv2.imwrite(str(mask), m)
    out = tmp_path / "cmp.mp4"
    r = runner.invoke(app, ["eval", str(src), "-r", str(src), "-m", str(mask), "--side-by-side", str(out)])
    assert r.exit_code == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    video = read_video(out)
    ph, pw = panel_size(40, 56)
    assert video.num_frames == 7 and video.rate == Fraction(30000, 1001)
    assert (video.height, video.width) == (LABEL_PX + ph, 3 * pw)
    heat = video.frames[:, LABEL_PX + 2 : -2, 2 * pw + 2 : 3 * pw - 2]
    heat = heat[:, np.r_[0:6, 30:heat.shape[1]]]  # away from the outline (rows 10-30 of 40)
    assert heat.max() < 24 and heat.mean() < 2  # black up to the encoder's noise


@pytest.mark.parametrize("target, fragment", [
    ("missing/cmp.mp4", "mkdir -p"),
    ("cmp.gif", "must end in .mp4"),
])  # fmt: skip
def test_bad_side_by_side_path_is_one_line_exit_2_nothing_written(tmp_path, target, fragment):
    src = tmp_path / "src.mp4"
    write_video(src, frames(3, 16, 16), 8.0, lossless=True)
    before = set(tmp_path.rglob("*"))
    r = runner.invoke(app, ["eval", str(src), "-r", str(src), "--side-by-side", str(tmp_path / target)])
    assert r.exit_code == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.stderr
    assert set(tmp_path.rglob("*")) == before
