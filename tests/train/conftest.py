"""The train tests need torch (the executors they share are in ``tests/_executors.py``)."""

import pytest

pytest.importorskip("torch")
