"""Fixtures of the engine tests: one tiny pipeline per module, one thread."""

import pytest
import torch
from cache_helpers import clip, eval_pipeline


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return eval_pipeline()


@pytest.fixture(scope="module")
def small_clip():
    """9 frames 64x64 (48 tokens): a 20x22 px box touching 2x2 token cells per frame."""
    return clip(9, 64, (20, 40, 8, 30))


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    # module scope: set before the module-scoped pipelines and runs that other fixtures build
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; tiny shapes gain nothing from threads
    yield
    torch.set_num_threads(threads)
