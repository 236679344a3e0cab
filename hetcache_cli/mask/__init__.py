"""Making edit masks: box keyframes, SAM 2 tracking of clicks and boxes, post-processing, writing.

`make.make_mask` runs `hetcache mask`. The prompts' syntax lives in `spec/prompts.py` and the keyframe
interpolation in `io/boxes.py`, where `hetcache edit` reads them too. Modules: `tracker` (SAM 2, imports
torch and transformers), `post` (dilate, hull, bounding box, invert), `output` (mask video or PNG folder,
preview), `job` (the command's settings).
"""
