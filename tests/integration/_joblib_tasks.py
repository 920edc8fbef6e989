"""Functions the joblib tests run in tasks: a light module (no scikit-learn or
scipy imports), so that worker processes import it quickly."""

from __future__ import annotations

import time

from joblib import Parallel, delayed

import fedexec


def square(i):
    return i * i


def in_task(i):
    """``(i, whether this runs inside a fedexec task)``."""
    return i, fedexec.get_runtime_context().task_id is not None


class CustomError(Exception):
    pass


def fail_on(i, bad, exc_type):
    if i == bad:
        raise exc_type(f"call {i} failed")
    return i


def row_sum(x, i, scale=1.0):
    return float(x[i].sum()) * scale


def pair_sum(pair, i, x):
    return float(pair[0][i].sum() + x[i].sum())


def fail_or_sleep(i):
    """Call 0 fails after 0.5 s; the others take 30 s, in steps that a cancel can
    interrupt on any backend."""
    if i == 0:
        time.sleep(0.5)
        raise ValueError("first call failed")
    for _ in range(600):
        time.sleep(0.05)
    return i


def nested(i):
    return sum(Parallel(n_jobs=2)(delayed(square)(j) for j in range(i)))
