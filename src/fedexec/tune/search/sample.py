"""Search-space primitives: ``uniform``, ``loguniform``, ``randint``, ``choice`` ...

Each primitive returns a :class:`Domain`: a description of where a value comes
from, with ``sample(spec=None, size=1, random_state=None)``. Searchers read the
domain's bounds (``lower``/``upper``/``categories``, ``sampler``, ``q``) to build
their own spaces; :class:`BasicVariantGenerator` just calls ``sample``.

Value ranges (as Ray's):

=========================  =================================================
``uniform(lo, hi)``        float in ``[lo, hi)``
``quniform(lo, hi, q)``    ``round(x / q) * q``, kept in ``[lo, hi]``
``loguniform(lo, hi)``     float, log-uniform in ``[lo, hi)`` (``lo > 0``)
``qloguniform(lo, hi, q)`` as ``loguniform``, rounded to a multiple of ``q``
``randn(mean, sd)``        normal float; ``qrandn(mean, sd, q)`` rounded
``randint(lo, hi)``        int in ``[lo, hi)`` (``hi`` excluded)
``qrandint(lo, hi, q)``    multiple of ``q`` in ``[lo, hi]`` (``hi`` included)
``lograndint(lo, hi)``     int, log-uniform in ``[lo, hi)``
``qlograndint(lo, hi, q)`` as ``lograndint``, multiple of ``q``, ``hi`` included
``choice(categories)``     one of the categories, uniformly
``sample_from(fn)``        ``fn(spec)``; ``spec.config`` is the resolved config
``grid_search(values)``    every value (a ``{"grid_search": values}`` marker)
=========================  =================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Categorical",
    "Domain",
    "Float",
    "Function",
    "Integer",
    "choice",
    "grid_search",
    "lograndint",
    "loguniform",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "sample_from",
    "uniform",
]

def _rng(random_state: Any) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    return np.random.default_rng(random_state)


class Domain:
    """Where one value of a config comes from.

    Attributes:
        sampler: ``"uniform"``, ``"loguniform"``, ``"normal"``, ``"choice"`` or
            ``"function"``: how values are drawn.
        q: the quantum values are rounded to, or None.
    """

    sampler: str = ""
    q: float | None = None

    def sample(self, spec: Any = None, size: int = 1, random_state: Any = None) -> Any:
        """One value (``size == 1``) or a list of ``size`` values.

        Args:
            spec: what :func:`sample_from` functions receive (has ``.config``).
            size: how many values.
            random_state: a seed, ``numpy.random.Generator`` or ``RandomState``.
        """
        values = self._draw(_rng(random_state), size, spec)
        return values[0] if size == 1 else values

    def _draw(self, rng: np.random.Generator, size: int, spec: Any) -> list[Any]:
        raise NotImplementedError

    def is_grid(self) -> bool:
        return False

    def is_function(self) -> bool:
        return self.sampler == "function"

    def domain_str(self) -> str:
        return repr(self)


class Float(Domain):
    """A float range ``[lower, upper)``; see the module table for each sampler."""

    def __init__(self, lower: float | None, upper: float | None, sampler: str = "uniform",
                 q: float | None = None, base: float = 10.0,
                 mean: float = 0.0, sd: float = 1.0) -> None:
        if sampler in ("uniform", "loguniform"):
            if lower is None or upper is None or not lower < upper:
                raise ValueError(f"{sampler}: lower ({lower}) must be below upper ({upper})")
            if sampler == "loguniform" and lower <= 0:
                raise ValueError(f"loguniform: lower ({lower}) must be positive")
        if sampler == "normal" and sd <= 0:
            raise ValueError(f"randn: sd ({sd}) must be positive")
        if q is not None and q <= 0:
            raise ValueError(f"q ({q}) must be positive")
        self.lower, self.upper, self.sampler, self.q = lower, upper, sampler, q
        self.base, self.mean, self.sd = base, mean, sd

    def quantized(self, q: float) -> Float:
        """The same range, rounded to multiples of ``q``."""
        return Float(self.lower, self.upper, self.sampler, q, self.base, self.mean, self.sd)

    def _draw(self, rng: np.random.Generator, size: int, spec: Any) -> list[Any]:
        if self.sampler == "uniform" and size == 1 and self.q is None:  # the common case
            lo, hi = float(self.lower or 0.0), float(self.upper or 0.0)
            value = float(rng.uniform(lo, hi))
            return [value if value < hi else float(np.nextafter(hi, -np.inf))]
        if self.sampler == "uniform":
            raw = rng.uniform(self.lower, self.upper, size)  # type: ignore[arg-type]
        elif self.sampler == "loguniform":
            log = math.log(self.base)
            raw = np.exp(rng.uniform(math.log(self.lower) / log,  # type: ignore[arg-type]
                                     math.log(self.upper) / log, size) * log)  # type: ignore[arg-type]
        else:
            raw = rng.normal(self.mean, self.sd, size)
        if self.q is None:
            if self.upper is not None and self.sampler != "normal":
                raw = np.minimum(raw, np.nextafter(self.upper, -np.inf))
            return [float(v) for v in raw]
        return [self._round(float(v)) for v in raw]

    def _round(self, value: float) -> float:
        q = self.q
        assert q is not None
        out = round(value / q) * q
        if self.lower is not None and self.upper is not None:
            if out < self.lower:
                out += q * math.ceil((self.lower - out) / q - 1e-12)
            if out > self.upper:
                out -= q * math.ceil((out - self.upper) / q - 1e-12)
        # float noise from q multiples (0.1 * 3): round to q's decimals
        decimals = max(0, -math.floor(math.log10(q)) + 6) if q < 1 else 0
        return round(out, decimals) if q < 1 else float(out)

    def __repr__(self) -> str:
        if self.sampler == "normal":
            return f"Normal(mean={self.mean}, sd={self.sd}, q={self.q})"
        return f"Float({self.sampler}, [{self.lower}, {self.upper}), q={self.q})"


class Integer(Domain):
    """An int range ``[lower, upper)`` (``upper`` included when quantized)."""

    def __init__(self, lower: int, upper: int, sampler: str = "uniform", q: int | None = None,
                 base: float = 10.0) -> None:
        if not lower < upper:
            raise ValueError(f"randint: lower ({lower}) must be below upper ({upper})")
        if sampler == "loguniform" and lower <= 0:
            raise ValueError(f"lograndint: lower ({lower}) must be positive")
        if q is not None and (q <= 0 or int(q) != q):
            raise ValueError(f"q ({q}) must be a positive integer")
        self.lower, self.upper, self.sampler, self.q, self.base = (
            int(lower), int(upper), sampler, q, base)

    def quantized(self, q: int) -> Integer:
        """The same range, on multiples of ``q``, ``upper`` included."""
        return Integer(self.lower, self.upper, self.sampler, q, self.base)

    def _draw(self, rng: np.random.Generator, size: int, spec: Any) -> list[Any]:
        hi = self.upper + 1 if self.q is not None else self.upper  # quantized: inclusive
        if self.sampler == "loguniform":
            log = math.log(self.base)
            raw = np.exp(rng.uniform(math.log(self.lower) / log, math.log(hi) / log, size) * log)
            values = [min(int(v), hi - 1) for v in raw]
        else:
            values = [int(v) for v in rng.integers(self.lower, hi, size)]
        if self.q is None:
            return values
        q = int(self.q)
        out = []
        for v in values:
            r = round(v / q) * q
            while r > self.upper:
                r -= q
            while r < self.lower:
                r += q
            out.append(r)
        return out

    def __repr__(self) -> str:
        return f"Integer({self.sampler}, [{self.lower}, {self.upper}), q={self.q})"


class Categorical(Domain):
    """One of ``categories``, each equally likely."""

    sampler = "choice"

    def __init__(self, categories: Sequence[Any]) -> None:
        self.categories = list(categories)
        if not self.categories:
            raise ValueError("choice() needs at least one category")

    def _draw(self, rng: np.random.Generator, size: int, spec: Any) -> list[Any]:
        return [self.categories[int(i)] for i in rng.integers(0, len(self.categories), size)]

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, i: int) -> Any:
        return self.categories[i]

    def __repr__(self) -> str:
        return f"Categorical({self.categories})"


class Function(Domain):
    """``func(spec)`` (or ``func()``), where ``spec.config`` is the config resolved
    so far: lets one value depend on others."""

    sampler = "function"

    def __init__(self, func: Callable[..., Any]) -> None:
        if not callable(func):
            raise TypeError(f"sample_from needs a callable, got {func!r}")
        self.func = func
        try:
            import inspect

            self._takes_spec = len(inspect.signature(func).parameters) > 0
        except (TypeError, ValueError):
            self._takes_spec = True

    def _draw(self, rng: np.random.Generator, size: int, spec: Any) -> list[Any]:
        return [self.func(spec) if self._takes_spec else self.func() for _ in range(size)]

    def __repr__(self) -> str:
        return f"Function({getattr(self.func, '__name__', self.func)!r})"


# ------------------------------------------------------------------ the primitives
def uniform(lower: float, upper: float) -> Float:
    """A float drawn uniformly from ``[lower, upper)``."""
    return Float(lower, upper)


def quniform(lower: float, upper: float, q: float) -> Float:
    """A uniform float rounded to a multiple of ``q``, within ``[lower, upper]``."""
    return Float(lower, upper, q=q)


def loguniform(lower: float, upper: float, base: float = 10) -> Float:
    """A float whose logarithm is uniform in ``[log(lower), log(upper))``."""
    return Float(lower, upper, "loguniform", base=base)


def qloguniform(lower: float, upper: float, q: float, base: float = 10) -> Float:
    """A log-uniform float rounded to a multiple of ``q``."""
    return Float(lower, upper, "loguniform", q=q, base=base)


def randn(mean: float = 0.0, sd: float = 1.0) -> Float:
    """A float drawn from the normal distribution ``N(mean, sd)``."""
    return Float(None, None, "normal", mean=mean, sd=sd)


def qrandn(mean: float, sd: float, q: float) -> Float:
    """A normal float rounded to a multiple of ``q``."""
    return Float(None, None, "normal", q=q, mean=mean, sd=sd)


def randint(lower: int, upper: int) -> Integer:
    """An int in ``[lower, upper)``: ``upper`` is excluded, as in Ray."""
    return Integer(lower, upper)


def qrandint(lower: int, upper: int, q: int = 1) -> Integer:
    """A multiple of ``q`` in ``[lower, upper]`` (``upper`` included)."""
    return Integer(lower, upper, q=q)


def lograndint(lower: int, upper: int, base: float = 10) -> Integer:
    """An int whose logarithm is uniform: in ``[lower, upper)``."""
    return Integer(lower, upper, "loguniform", base=base)


def qlograndint(lower: int, upper: int, q: int, base: float = 10) -> Integer:
    """A log-uniform multiple of ``q`` in ``[lower, upper]``."""
    return Integer(lower, upper, "loguniform", q=q, base=base)


def choice(categories: Sequence[Any]) -> Categorical:
    """One of ``categories``, uniformly."""
    return Categorical(categories)


def sample_from(func: Callable[..., Any]) -> Function:
    """A value computed by ``func(spec)``; ``spec.config`` holds the other values."""
    return Function(func)


def grid_search(values: Sequence[Any]) -> dict[str, list[Any]]:
    """Try every value: each grid axis multiplies the number of trials."""
    return {"grid_search": list(values)}
