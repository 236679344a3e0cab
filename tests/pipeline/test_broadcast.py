"""The window's frames sent to the other ranks as tensors: what is split off and how it is rebuilt."""

import numpy as np

from hetcache_cli.pipeline.broadcast import ARRAYS_KEY, rebuilt, split_arrays


def test_frames_leave_the_arguments_and_come_back_equal():
    rng = np.random.default_rng(0)
    video = rng.random((1, 5, 8, 8, 3), dtype=np.float32)
    mask = np.repeat((rng.random((1, 5, 8, 8, 1)) > 0.5).astype(np.float32), 3, axis=-1)
    kwargs = {"video": video, "mask": mask, "num_frames": 5, "prompt_embeds": None}
    rest, arrays = split_arrays(kwargs)
    assert "video" not in rest and "mask" not in rest and rest["num_frames"] == 5 and "prompt_embeds" in rest
    specs = rest[ARRAYS_KEY]
    assert [s[0] for s in specs] == ["video", "mask"] and [s[3] for s in specs] == ["as_is", "binary_rgb"]
    assert arrays[1].dtype == np.uint8 and arrays[1].nbytes * 12 == mask.nbytes  # one byte for three floats
    for (name, shape, dtype, how), sent in zip(specs, arrays):
        assert tuple(shape) == sent.shape and np.dtype(dtype) == sent.dtype
        back = rebuilt(sent, how)
        assert back.dtype == kwargs[name].dtype and np.array_equal(back, kwargs[name]), name
    assert kwargs["video"] is video and "video" in kwargs  # the caller's arguments are left as they were


def test_a_mask_that_is_not_three_equal_binary_channels_travels_as_it_is():
    soft = np.full((1, 2, 4, 4, 3), 0.5, np.float32)
    uneven = np.zeros((1, 2, 4, 4, 3), np.float32)
    uneven[..., 1] = 1
    for mask in (soft, uneven):
        rest, arrays = split_arrays({"mask": mask})
        assert rest[ARRAYS_KEY][0][3] == "as_is" and np.array_equal(rebuilt(arrays[0], "as_is"), mask)
    rest, arrays = split_arrays({"video": [np.zeros(3)]})  # not an array: stays with the pickled arguments
    assert arrays == [] and rest[ARRAYS_KEY] == [] and "video" in rest
