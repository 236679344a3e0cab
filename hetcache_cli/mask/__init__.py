"""Making edit masks: box keyframes, SAM 2 tracking of clicks and boxes, post-processing, writing.

`make.make_mask` runs `hetcache mask`; `make.edit_mask` gives `hetcache edit` its mask from a file
or from `box:` keyframes. Modules: `prompts` (parsing and checking boxes and clicks), `boxes`
(keyframe interpolation), `tracker` (SAM 2, imports torch and transformers), `post` (dilate, hull,
bounding box, invert), `output` (mask video or PNG folder, preview), `job` (the command's settings).
"""
