"""Skips shared by the runtime tests, each with the reason printed."""

import pytest

from hydra.runtime.quantize import int4_layout

needs_int4_layout = pytest.mark.skipif(
    int4_layout() is None, reason="this CPU's torch packs int4 in a layout hydra cannot unpack"
)
