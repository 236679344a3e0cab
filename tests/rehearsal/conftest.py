"""Fixtures of the rehearsal lane (see rehearsal_helpers.py)."""

import numpy as np
import pytest
from rehearsal_helpers import DEMO, Rehearsal, read_mask_image


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory) -> Rehearsal:
    return Rehearsal(tmp_path_factory.mktemp("rehearsal"))


@pytest.fixture(scope="session")
def demo_mask() -> np.ndarray:
    return read_mask_image(DEMO / "mask.png", (160, 160))
