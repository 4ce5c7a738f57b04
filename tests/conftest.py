"""pytest fixtures shared by all tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.parity_utils import parity_path


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """``shared/parity`` beside the checkout; tests using it skip with a reason when absent."""
    return parity_path()
