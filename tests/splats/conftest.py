"""Splat tests run torch on one thread.

The rasteriser's many small ops gain little from 2 threads, and on this shared 2-core machine a second busy
process made 2-thread runs 10-20x slower (0.9 s vs 0.04 s for one 64x48 render); one thread keeps every
test in seconds. The previous setting is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
