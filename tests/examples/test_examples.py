"""Every example in examples/ runs to completion."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parents[2] / "examples").glob("*.py"))
#: examples that train models: slow (still run in CI), with more time
SLOW = {"tune_digits.py", "train_classic.py"}


def _param(path: pathlib.Path):
    if path.name in SLOW:
        return pytest.param(path, marks=[pytest.mark.slow, pytest.mark.timeout(900)])
    return path


@pytest.mark.parametrize("path", [_param(p) for p in EXAMPLES], ids=lambda p: p.name)
def test_example_runs(path):
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         timeout=840 if path.name in SLOW else 300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip()
