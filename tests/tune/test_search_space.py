"""Search-space primitives keep to their ranges; variants multiply and resolve."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from fedexec import tune
from fedexec.tune.search import BasicVariantGenerator
from fedexec.tune.search.variant_generator import generate_variants

N = 2000


def draws(domain):
    return domain.sample(size=N, random_state=0)


def test_float_primitives_stay_in_range():
    for v in draws(tune.uniform(-2, 3)):
        assert -2 <= v < 3 and isinstance(v, float)
    for v in draws(tune.quniform(0, 1, 0.25)):
        assert 0 <= v <= 1 and math.isclose(v / 0.25, round(v / 0.25))
    logs = draws(tune.loguniform(1e-4, 1e-1))
    assert all(1e-4 <= v < 1e-1 for v in logs)
    assert np.median(logs) < 1e-2  # log-uniform: the median is near the geometric mean
    for v in draws(tune.qloguniform(1, 100, 5)):
        assert 0 < v <= 100 and math.isclose(v / 5, round(v / 5))
    normal = draws(tune.randn(10, 2))
    assert abs(np.mean(normal) - 10) < 0.3 and abs(np.std(normal) - 2) < 0.3
    for v in draws(tune.qrandn(0, 1, 0.5)):
        assert math.isclose(v / 0.5, round(v / 0.5))


def test_integer_primitives_stay_in_range():
    values = draws(tune.randint(0, 5))
    assert set(values) == {0, 1, 2, 3, 4}  # upper bound excluded, as Ray
    assert all(isinstance(v, int) for v in values)
    assert set(draws(tune.qrandint(0, 10, 5))) == {0, 5, 10}  # upper included
    logs = draws(tune.lograndint(1, 1000))
    assert min(logs) >= 1 and max(logs) < 1000 and np.median(logs) < 100
    q = draws(tune.qlograndint(10, 100, 10))
    assert set(q) <= set(range(10, 101, 10))


def test_choice_and_sample_from():
    assert set(draws(tune.choice(["a", "b", 3]))) == {"a", "b", 3}
    assert tune.sample_from(lambda: 7).sample() == 7


def test_invalid_ranges_are_rejected():
    with pytest.raises(ValueError, match="below"):
        tune.uniform(1, 1)
    with pytest.raises(ValueError, match="positive"):
        tune.loguniform(0, 1)
    with pytest.raises(ValueError):
        tune.randint(3, 3)
    with pytest.raises(ValueError):
        tune.choice([])


def test_grid_axes_multiply_and_num_samples_repeats_the_grid():
    space = {"a": tune.grid_search([1, 2]), "nested": {"b": tune.grid_search(["x", "y", "z"])},
             "c": tune.uniform(0, 1), "const": 5}
    variants = [cfg for _, cfg in generate_variants(space, num_samples=2,
                                                    rng=np.random.default_rng(0))]
    assert len(variants) == 12
    pairs = [(v["a"], v["nested"]["b"]) for v in variants]
    assert pairs[:6] == [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]
    assert pairs[6:] == pairs[:6]
    assert all(v["const"] == 5 and 0 <= v["c"] < 1 for v in variants)
    assert len({v["c"] for v in variants}) == 12  # sampled anew for each variant


def test_sample_from_sees_the_resolved_config_in_any_order():
    space = {"z": tune.sample_from(lambda spec: spec.config.y * 2),
             "y": tune.sample_from(lambda spec: spec.config["x"] + 1),
             "x": tune.grid_search([1, 10])}
    got = [(c["x"], c["y"], c["z"]) for _, c in generate_variants(space)]
    assert got == [(1, 2, 4), (10, 11, 22)]
    cyclic = {"a": tune.sample_from(lambda s: s.config.b), "b": tune.sample_from(
        lambda s: s.config.a)}
    with pytest.raises(ValueError, match="cycle"):
        list(generate_variants(cyclic))


def test_basic_variant_generator_points_limits_and_restore():
    space = {"x": tune.uniform(0, 1), "g": tune.grid_search([1, 2])}
    gen = BasicVariantGenerator(points_to_evaluate=[{"x": 0.5}], random_state=3)
    gen.set_search_properties(None, None, space, num_samples=3)
    assert gen.total_samples == 6
    first = [gen.suggest(f"t{i}") for i in range(3)]
    assert first[0] == {"x": 0.5, "g": 1}
    copy = pickle.loads(pickle.dumps(gen))  # what the experiment state holds
    rest = [gen.suggest(f"t{i}") for i in range(3, 6)]
    assert [copy.suggest(f"t{i}") for i in range(3, 6)] == rest
    assert gen.suggest("t6") == gen.FINISHED
    limited = BasicVariantGenerator(max_concurrent=1)
    limited.set_search_properties(None, None, {"x": 1}, num_samples=3)
    assert limited.suggest("a") == {"x": 1}
    assert limited.suggest("b") is None
    limited.on_trial_complete("a")
    assert limited.suggest("b") == {"x": 1}


def test_imports_stay_lazy():
    import subprocess
    import sys

    code = ("import sys, fedexec; assert 'fedexec.tune' not in sys.modules; fedexec.tune; "
            "heavy = [m for m in ('optuna', 'hyperopt', 'tensorboardX', 'pandas', 'torch', "
            "'rich') if m in sys.modules]; assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_trial_actor_imports_only_what_it_uses():
    # every new trial actor process imports this: the searchers, schedulers, loggers
    # and numpy (hundreds of ms) are the driver's business
    import subprocess
    import sys

    code = ("import sys; import fedexec.tune.execution.trial_actor; "
            "heavy = [m for m in ('numpy', 'fedexec.tune.schedulers', 'fedexec.tune.search', "
            "'fedexec.tune.tuner', 'fedexec.tune.logger') if m in sys.modules]; "
            "assert not heavy, heavy; from fedexec import tune; tune.Tuner; tune.uniform; "
            "tune.schedulers.ASHAScheduler; from fedexec.tune import grid_search, Trainable")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
