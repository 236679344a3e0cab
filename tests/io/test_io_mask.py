import numpy as np
import pytest

from hetcache_cli.errors import InputError
from hetcache_cli.io.mask import load_mask, mask_coverage, natural_key
from hetcache_cli.io.video import write_video

H, W = 48, 64


def _rect(h=H, w=W, box=(10, 20, 30, 40), value=255, dtype=np.uint8) -> np.ndarray:
    img = np.zeros((h, w), dtype)
    y0, y1, x0, x1 = box
    img[y0:y1, x0:x1] = value
    return img


def _square_video(n: int) -> np.ndarray:
    """RGB mask frames [n, H, W, 3] with an 8x8 white square moving 4 px right per frame."""
    frames = np.zeros((n, H, W, 3), np.uint8)
    for t in range(n):
        frames[t, 8:16, 4 * t : 4 * t + 8] = 255
    return frames


def test_single_png_is_repeated_for_every_frame(tmp_path, write_png):
    path = write_png(tmp_path / "m.png", _rect())
    mask = load_mask(path, 9, (H, W))
    assert mask.shape == (9, H, W) and mask.dtype == bool
    assert np.array_equal(mask[0], _rect() > 0)
    assert all(np.array_equal(m, mask[0]) for m in mask)
    assert mask_coverage(mask) == pytest.approx(10 * 10 / (H * W))


def test_resized_to_video_size(tmp_path, write_png):
    path = write_png(tmp_path / "m.png", _rect(24, 32, (5, 10, 15, 20)))
    mask = load_mask(path, 5, (H, W))
    assert mask.shape == (5, H, W)
    assert np.array_equal(mask[0], _rect(H, W, (10, 20, 30, 40)) > 0)


def test_thin_line_survives_downscale(tmp_path, write_png):
    img = np.zeros((96, 128), np.uint8)
    img[:, 51] = 255  # one pixel wide at 2x the video size
    mask = load_mask(write_png(tmp_path / "m.png", img), 5, (H, W), threshold=0.25)
    assert mask[0].sum(axis=0)[25] == H


def test_threshold_and_invert(tmp_path, write_png):
    img = _rect(value=100)  # gray 0.39
    img[0:5, 0:5] = 255
    path = write_png(tmp_path / "m.png", img)
    assert load_mask(path, 5, (H, W), threshold=0.5)[0].sum() == 25
    assert load_mask(path, 5, (H, W), threshold=0.3)[0].sum() == 25 + 100
    inverted = load_mask(path, 5, (H, W), threshold=0.3, invert=True)[0]
    assert inverted.sum() == H * W - 125 and not inverted[0, 0] and inverted[47, 63]


def test_dilation_grows_by_radius(tmp_path, write_png):
    img = np.zeros((H, W), np.uint8)
    img[24, 32] = 255
    mask = load_mask(write_png(tmp_path / "m.png", img), 5, (H, W), dilation_px=3)[0]
    assert mask[24, 29] and mask[24, 35] and mask[21, 32] and mask[27, 32]
    assert not mask[24, 28] and not mask[24, 36] and not mask[21, 29]  # ellipse, not box
    assert load_mask(tmp_path / "m.png", 5, (H, W))[0].sum() == 1


def test_rgba_alpha_composited_over_black(tmp_path, write_png):
    img = np.full((H, W, 4), 255, np.uint8)  # white everywhere ...
    img[..., 3] = 0  # ... but transparent
    img[10:20, 10:20, 3] = 255
    mask = load_mask(write_png(tmp_path / "m.png", img), 5, (H, W))[0]
    assert mask.sum() == 100 and mask[10:20, 10:20].all()


def test_mask_video_takes_first_frames_in_order(tmp_path):
    path = write_video(tmp_path / "mask.mp4", _square_video(9), 24, lossless=True)
    mask = load_mask(path, 5, (H, W))
    assert mask.shape == (5, H, W)
    for t in range(5):
        assert np.array_equal(mask[t], _square_video(9)[t, ..., 0] > 0), t


def test_mask_video_too_short(tmp_path):
    path = write_video(tmp_path / "mask.mp4", _square_video(5), 24, lossless=True)
    with pytest.raises(InputError, match="has 5 frames but the video uses 9"):
        load_mask(path, 9, (H, W))


def test_folder_natural_order_ignores_other_files(tmp_path, write_png):
    folder = tmp_path / "masks"
    folder.mkdir()
    frames = _square_video(11)
    for t in range(11):
        write_png(folder / f"f{t}.png", frames[t, ..., 0])
    (folder / "notes.txt").write_text("not a mask")
    write_png(folder / ".f0.png", np.full((H, W), 255, np.uint8))  # hidden: ignored
    mask = load_mask(folder, 11, (H, W))
    for t in range(11):  # lexical order would put f10 right after f1
        assert np.array_equal(mask[t], frames[t, ..., 0] > 0), t
    with pytest.raises(InputError, match="has 11 frames but the video uses 13"):
        load_mask(folder, 13, (H, W))


def test_natural_key():
    assert sorted(["f10.png", "f2.png", "F1.png"], key=natural_key) == ["F1.png", "f2.png", "f10.png"]


def test_empty_folder(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(InputError, match="has no images"):
        load_mask(tmp_path, 5, (H, W))


def test_empty_mask(tmp_path, write_png):
    path = write_png(tmp_path / "m.png", _rect(value=100))
    with pytest.raises(InputError, match="is empty.*--mask-threshold"):
        load_mask(path, 5, (H, W))


def test_all_white_mask(tmp_path, write_png):
    path = write_png(tmp_path / "m.png", np.full((H, W), 255, np.uint8))
    with pytest.raises(InputError, match="covers the whole video"):
        load_mask(path, 5, (H, W))
    # Dilation that swallows the frame is also "everything".
    small = write_png(tmp_path / "s.png", _rect(box=(20, 28, 28, 36)))
    with pytest.raises(InputError, match="covers the whole video"):
        load_mask(small, 5, (H, W), dilation_px=60)


def test_unreadable_and_missing(tmp_path):
    bad = tmp_path / "m.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="cannot decode mask image .*m.png"):
        load_mask(bad, 5, (H, W))
    with pytest.raises(InputError, match="nope.png does not exist"):
        load_mask(tmp_path / "nope.png", 5, (H, W))
    with pytest.raises(InputError, match="threshold 1.5"):
        load_mask(bad, 5, (H, W), threshold=1.5)
