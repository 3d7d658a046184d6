"""Strategy tests train tiny MLPs: one torch thread is several times faster than two busy ones."""

from __future__ import annotations

import pytest

from tests.strategies.helpers import one_thread


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield
