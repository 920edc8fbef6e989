"""The rl tests need torch and gymnasium (the executors they share are in
``tests/_executors.py``)."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("gymnasium")
