"""SAM 2 tracking plumbing on a tiny random-weight Sam2VideoModel loaded like real weights (CPU, seconds).

The weights are random, so these tests check the plumbing, not the masks' quality: the bounded,
chunked tracker must give exactly the masks of transformers' own whole-clip propagation.
"""

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.errors import InputError
from hetcache_cli.io.video import read_video
from hetcache_cli.mask.post import bounding_box
from hetcache_cli.spec.prompts import Box, Point
from hetcache_cli.mask.tracker import Preprocess, load_tracker, resolve_tracker

from sam2_helpers import TINY_MEAN, TINY_SIZE, TINY_STD


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tracker(tiny_sam2_dir):
    return load_tracker(str(tiny_sam2_dir), device="cpu")


def reference_logits(tracker, frames, inputs: dict, start: int, reverse: bool) -> dict[int, torch.Tensor]:
    """transformers' propagation with the whole clip in the session and nothing forgotten."""
    from transformers import Sam2VideoInferenceSession

    h, w = frames.shape[1:3]
    pixels = tracker.preprocess(frames, torch.device("cpu"), torch.float32)
    session = Sam2VideoInferenceSession(video=pixels, video_height=h, video_width=w, dtype=torch.float32)
    obj = session.obj_id_to_idx(1)
    session.add_point_inputs(obj, start, inputs)
    session.obj_with_new_inputs = [1]
    with torch.inference_mode():
        tracker.model(inference_session=session, frame_idx=start)
        outs = tracker.model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse)
        return {o.frame_idx: o.pred_masks.clone() for o in outs}


def test_preprocess_follows_the_processor_config(tracker):
    assert tracker.preprocess == Preprocess(TINY_SIZE, 1 / 255, TINY_MEAN, TINY_STD)
    flat = np.full((2, 30, 50, 3), (200, 100, 50), np.uint8)
    x = tracker.preprocess(flat, torch.device("cpu"), torch.float32)
    assert x.shape == (2, 3, TINY_SIZE, TINY_SIZE)
    expect = (torch.tensor([200, 100, 50]) / 255 - torch.tensor(TINY_MEAN)) / torch.tensor(TINY_STD)
    torch.testing.assert_close(x[1, :, 7, 9], expect.float(), rtol=0, atol=1e-6)


def test_prompt_inputs_box_corners_first_then_clicks(tracker):
    boxes = [Box(8, 14, 40, 42, frame=2)]
    points = [Point(20, 28, 2), Point(60, 10, 2, positive=False), Point(5, 5, 7)]
    inputs = tracker.prompt_inputs(points, boxes, 2, height=56, width=80)
    sx, sy = TINY_SIZE / 80, TINY_SIZE / 56
    expect = [[8 * sx, 14 * sy], [40 * sx, 42 * sy], [20 * sx, 28 * sy], [60 * sx, 10 * sy]]
    torch.testing.assert_close(inputs["point_coords"], torch.tensor([[expect]]))
    assert inputs["point_labels"].tolist() == [[[2, 3, 1, 0]]]


@pytest.mark.parametrize("start", [0, 5, 11])
def test_bounded_tracking_equals_whole_clip_propagation(tracker, object_clip, start):
    frames = object_clip["frames"]
    num_frames, h, w = frames.shape[:3]
    points = [Point(18 + 3 * start, 28, start)]
    boxes = [Box(8 + 3 * start, 18, 30 + 3 * start, 38, start)]
    mask = tracker.track(frames, points, boxes, chunk_frames=3)

    inputs = tracker.prompt_inputs(points, boxes, start, h, w)
    forward = reference_logits(tracker, frames, inputs, start, reverse=False)
    backward = reference_logits(tracker, frames, inputs, start, reverse=True)
    assert sorted(forward) == list(range(start, num_frames))
    assert sorted(backward) == (list(range(0, start + 1)) if start else [])  # nothing before frame 0
    expect = {**backward, **forward}
    informative = 0
    for f in range(num_frames):
        ref = tracker.frame_mask(expect[f], h, w)
        assert np.array_equal(mask[f], ref), f"frame {f}"
        informative += 0 < ref.sum() < ref.size
    assert informative >= num_frames // 2  # the comparison is not between empty masks

    # Memory stayed bounded: one chunk of prepared frames, `keep` tracked frames per direction.
    assert tracker.stats.frames_held <= 3
    assert 0 < tracker.stats.memories_held <= tracker.keep == 4
    assert tracker.stats.frames_tracked == num_frames


def test_forgetting_too_much_changes_the_masks(tracker, object_clip):
    """The equality above can fail: a memory bank cut to 1 frame gives other masks."""
    frames = object_clip["frames"]
    points = [Point(18, 28, 0)]
    full = tracker.track(frames, points, [], chunk_frames=4)
    tracker.keep = 1
    try:
        cut = tracker.track(frames, points, [], chunk_frames=4)
    finally:
        tracker.keep = 4
    assert np.array_equal(full[0], cut[0])
    assert not np.array_equal(full, cut)


def test_several_prompt_frames_each_condition_the_track(tracker, object_clip):
    frames = object_clip["frames"]
    progress = []
    mask = tracker.track(
        frames, [Point(18, 28, 0), Point(48, 28, 10), Point(70, 50, 10, positive=False)], [],
        chunk_frames=5, progress=lambda done, total: progress.append((done, total)),
    )  # fmt: skip
    assert mask.shape == (12, 56, 80) and mask.dtype == bool
    assert progress == [(i, 12) for i in range(1, 13)]


def test_missing_weights_name_the_download(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(InputError, match=r"hf download facebook/sam2.1-hiera-tiny"):
        resolve_tracker(None)
    with pytest.raises(InputError, match=r"hf download someone/sam2-large"):
        resolve_tracker("someone/sam2-large")
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        resolve_tracker(str(tmp_path / "not-a-model"))


def test_mask_command_tracks_clicks(tiny_sam2_dir, tracker, object_clip, tmp_path):
    """`hetcache mask --point` end to end: the mask video holds what the model says, frame by frame."""
    out = tmp_path / "tracked.mp4"
    r = invoke(
        "mask", object_clip["video"], "--point", "18,28", "--negative", "60,10", "--tracker", tiny_sam2_dir,
        "--device", "cpu", "--chunk-frames", 4, "-o", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "tracking" in r.stderr and "12/12" in r.stderr  # the progress bar
    assert f"wrote {out} (12 frames 80x56 @ 10 fps, lossless video) from SAM 2" in r.stdout

    clip = read_video(out)
    assert clip.frames.shape == (12, 56, 80, 3) and clip.fps == pytest.approx(10.0)
    assert set(np.unique(clip.frames).tolist()) <= {0, 255}
    written = clip.frames[..., 0] == 255
    assert 0 < written.mean() < 1  # random weights, but a mask that makes the comparison below count

    frames = read_video(object_clip["video"]).frames  # what the command tracked
    points = [Point(18, 28, 0), Point(60, 10, 0, positive=False)]
    expect = reference_logits(tracker, frames, tracker.prompt_inputs(points, [], 0, 56, 80), 0, reverse=False)
    for f in range(12):
        assert np.array_equal(written[f], tracker.frame_mask(expect[f], 56, 80)), f
    # On the prompt frame the mask is non-empty exactly when the model's logits say so.
    assert written[0].any() == bool((expect[0] > 0).any())


def test_tracked_box_to_png_folder(tiny_sam2_dir, object_clip, tmp_path):
    out = tmp_path / "frames"
    r = invoke(
        "mask", object_clip["video"], "--box", "25,18,45,38@5", "--track", "--as-box", "--tracker", tiny_sam2_dir,
        "--device", "cpu", "-o", out, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["method"], summary["kind"], summary["frames"]) == ("sam2", "folder", 12)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:05d}.png" for i in range(12)]
    masks = np.stack([cv2.imread(str(out / n), cv2.IMREAD_UNCHANGED) for n in names])
    assert masks.shape == (12, 56, 80) and set(np.unique(masks).tolist()) <= {0, 255}
    assert np.array_equal(bounding_box(masks == 255), masks == 255)  # --as-box reached the output
