"""``AlgorithmConfig``: the builder every algorithm's config class extends.

A config is a plain object whose attributes are the settings. The builder
methods (``.environment()``, ``.env_runners()``, ``.training()`` ...) set
attributes by keyword and return ``self``; a keyword that names no attribute is a
``ValueError``. An algorithm's config class adds its own settings by assigning
them in ``__init__`` (``self.clip_param = 0.3``) after ``super().__init__``, and
its old spellings in the class attribute ``renames``.

Old spellings (``num_workers``, ``num_rollout_workers``, ``num_sgd_iter``,
``sgd_minibatch_size``, ``lambda``, ``framework`` ...) are accepted on the builder
and in flat dicts (``from_dict``/``update_from_dict``, YAML); ``to_dict()`` shows
the modern names. ``framework="tf"``/``"tf2"`` runs on torch with a
``UserWarning``. Keys of the new API stack that change nothing here
(``enable_connectors`` ...) are accepted and ignored.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

__all__ = ["MODEL_DEFAULTS", "AlgorithmConfig", "NotProvided"]


class _NotProvided:
    def __repr__(self) -> str:
        return "NotProvided"


#: the default of builder arguments: "leave this setting as it is"
NotProvided: Any = _NotProvided()

#: the model settings (``config.model``) and their defaults, as RLlib's classic ones
MODEL_DEFAULTS: dict[str, Any] = {
    "fcnet_hiddens": [256, 256],
    "fcnet_activation": "tanh",
    "vf_share_layers": False,
    "free_log_std": False,
    # Q-networks (DQN)
    "post_fcnet_hiddens": [],
    "post_fcnet_activation": "relu",
}

#: old spelling -> attribute, for every algorithm
_RENAMES: dict[str, str] = {
    "num_workers": "num_env_runners",
    "num_rollout_workers": "num_env_runners",
    "num_envs_per_worker": "num_envs_per_env_runner",
    "num_cpus_per_worker": "num_cpus_per_env_runner",
    "num_gpus_per_worker": "num_gpus_per_env_runner",
    "num_sgd_iter": "num_epochs",
    "sgd_minibatch_size": "minibatch_size",
    "mini_batch_size_per_learner": "minibatch_size",
    "lambda": "lambda_",
    "framework": "framework_str",
    "recreate_failed_workers": "restart_failed_env_runners",
    "recreate_failed_env_runners": "restart_failed_env_runners",
    "max_num_worker_restarts": "max_num_env_runner_restarts",
    "evaluation_num_workers": "evaluation_num_env_runners",
    "num_cpus_for_driver": "num_cpus_for_main_process",
    "min_sample_timesteps_per_reporting": "min_sample_timesteps_per_iteration",
    "min_time_s_per_reporting": "min_time_s_per_iteration",
    "metrics_smoothing_episodes": "metrics_num_episodes_for_smoothing",
}

#: settings of Ray's other stacks that have no effect here; accepted and ignored
_IGNORED = frozenset({
    "enable_connectors", "_enable_new_api_stack", "enable_rl_module_and_learner",
    "enable_env_runner_and_connector_v2", "_enable_rl_module_api", "_enable_learner_api",
    "create_env_on_driver", "log_sys_usage", "simple_optimizer", "preprocessor_pref",
    "_disable_preprocessor_api", "_disable_action_flattening", "eager_tracing",
    "compress_observations", "remote_worker_envs", "tf_session_args", "local_tf_session_args",
    "num_learners", "num_learner_workers", "num_gpus_per_learner", "num_cpus_per_learner",
    "callbacks", "normalize_actions_in_buffer", "sample_async", "ignore_worker_failures",
    "ignore_env_runner_failures", "synchronize_filters", "always_attach_evaluation_results",
})

_FRAMEWORKS = ("torch", "tf", "tf2", "tfe")


def _check_framework(value: Any) -> str:
    if value not in _FRAMEWORKS:
        raise ValueError(f"framework={value!r} is not known: use 'torch' (fedexec.rl runs on "
                         "torch; 'tf'/'tf2' are accepted and run on torch)")
    if value != "torch":
        warnings.warn(f"framework={value!r}: fedexec.rl has no TensorFlow implementation and "
                      "runs this config on torch (same algorithms, same settings); set "
                      "framework='torch' to silence this warning", UserWarning, stacklevel=4)
    return "torch"


class AlgorithmConfig:
    """The settings of an algorithm, with RLlib's builder methods.

    Args:
        algo_class: the :class:`~fedexec.rl.Algorithm` subclass ``build()`` makes.
    """

    #: old spellings of this algorithm's own settings (merged with the common ones)
    renames: ClassVar[dict[str, str]] = {}

    def __init__(self, algo_class: type | None = None) -> None:
        self.algo_class = algo_class
        # environment
        self.env: Any = None
        self.env_config: dict[str, Any] = {}
        self.observation_space: Any = None
        self.action_space: Any = None
        self.clip_actions = False
        self.normalize_actions = True
        self.render_env = False
        self.disable_env_checking = False
        # env runners
        self.num_env_runners = 2
        self.num_envs_per_env_runner = 1
        self.rollout_fragment_length: int | str = "auto"
        self.batch_mode = "truncate_episodes"
        self.observation_filter = "NoFilter"
        self.num_cpus_per_env_runner: float = 1
        self.num_gpus_per_env_runner: float = 0
        self.explore = True
        self.sample_timeout_s: float | None = None
        # training
        self.gamma = 0.99
        self.lr = 0.001
        self.train_batch_size = 200
        self.grad_clip: float | None = None
        self.model: dict[str, Any] = copy.deepcopy(MODEL_DEFAULTS)
        self.optimizer: dict[str, Any] = {}
        # resources
        self.num_gpus: float = 0
        self.num_cpus_for_main_process: float = 1
        # evaluation
        self.evaluation_interval: int | None = None
        self.evaluation_duration = 10
        self.evaluation_duration_unit = "episodes"
        self.evaluation_num_env_runners = 0
        self.evaluation_config: dict[str, Any] = {"explore": False}
        # reporting
        self.metrics_num_episodes_for_smoothing = 100
        self.min_sample_timesteps_per_iteration = 0
        self.min_time_s_per_iteration: float | None = None
        # fault tolerance
        self.restart_failed_env_runners = True
        self.max_num_env_runner_restarts = 1000
        # debugging / framework
        self.seed: int | None = None
        self.log_level = "WARN"
        self.framework_str = "torch"

    # -- the builder ----------------------------------------------------------------
    def environment(self, env: Any = NotProvided, **kwargs: Any) -> AlgorithmConfig:
        """``env`` (a gymnasium id, a ``register_env`` name, or an env class),
        ``env_config``, ``observation_space``, ``action_space``, ``clip_actions``,
        ``normalize_actions``."""
        return self._set(env=env, **kwargs)

    def env_runners(self, **kwargs: Any) -> AlgorithmConfig:
        """``num_env_runners``, ``num_envs_per_env_runner``, ``rollout_fragment_length``
        (an int or ``"auto"``: ``train_batch_size`` split over all envs),
        ``observation_filter`` (``"NoFilter"`` | ``"MeanStdFilter"``), ``explore``,
        ``num_cpus_per_env_runner``."""
        return self._set(**kwargs)

    rollouts = env_runners  # the classic name (with num_rollout_workers=)

    def training(self, **kwargs: Any) -> AlgorithmConfig:
        """``gamma``, ``lr``, ``train_batch_size``, ``model`` (merged into the
        current model settings), ``grad_clip`` and the algorithm's own settings."""
        return self._set(**kwargs)

    def resources(self, **kwargs: Any) -> AlgorithmConfig:
        """``num_gpus`` (for the learner), ``num_cpus_for_main_process``."""
        return self._set(**kwargs)

    def evaluation(self, **kwargs: Any) -> AlgorithmConfig:
        """``evaluation_interval`` (None: only ``algo.evaluate()``), ``evaluation_duration``
        (episodes), ``evaluation_num_env_runners``, ``evaluation_config`` (overrides,
        default ``{"explore": False}``)."""
        return self._set(**kwargs)

    def debugging(self, **kwargs: Any) -> AlgorithmConfig:
        """``seed``, ``log_level``."""
        return self._set(**kwargs)

    def reporting(self, **kwargs: Any) -> AlgorithmConfig:
        """``metrics_num_episodes_for_smoothing``, ``min_sample_timesteps_per_iteration``,
        ``min_time_s_per_iteration``."""
        return self._set(**kwargs)

    def fault_tolerance(self, **kwargs: Any) -> AlgorithmConfig:
        """``restart_failed_env_runners`` (default True: a dead env runner is
        replaced), ``max_num_env_runner_restarts``."""
        return self._set(**kwargs)

    def framework(self, framework: Any = NotProvided, **kwargs: Any) -> AlgorithmConfig:
        """``"torch"``; ``"tf"``/``"tf2"`` run on torch with a ``UserWarning``."""
        return self._set(framework_str=framework, **kwargs)

    def api_stack(self, **kwargs: Any) -> AlgorithmConfig:
        """Accepted for compatibility; there is one stack here."""
        return self

    def learners(self, **kwargs: Any) -> AlgorithmConfig:
        """Accepted for compatibility; learning runs in the algorithm's process."""
        return self._set(**kwargs)

    # -- dicts ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The settings as a flat dict, with the modern names (``lambda_`` is ``"lambda"``)."""
        out = {}
        for key, value in vars(self).items():
            if key.startswith("_") or key == "algo_class":
                continue
            out["lambda" if key == "lambda_" else key] = copy.deepcopy(value)
        out["framework"] = out.pop("framework_str")
        return out

    def update_from_dict(self, config: Mapping[str, Any]) -> AlgorithmConfig:
        """Set every key of ``config`` (old or new spellings); returns ``self``."""
        if isinstance(config, AlgorithmConfig):
            config = config.to_dict()
        self._set(**dict(config))
        return self

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> AlgorithmConfig:
        """A config of this class with ``config``'s settings."""
        return cls().update_from_dict(config)

    def copy(self, copy_frozen: bool | None = None) -> AlgorithmConfig:
        """A deep copy."""
        return copy.deepcopy(self)

    # read access as a dict (classic code does ``config["lr"]``)
    def __getitem__(self, key: str) -> Any:
        attr = self._attribute(key)
        if attr is None or not hasattr(self, attr):
            raise KeyError(key)
        return getattr(self, attr)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, NotProvided) is not NotProvided

    def keys(self) -> list[str]:
        return list(self.to_dict())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> list[tuple[str, Any]]:
        return list(self.to_dict().items())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(env={self.env!r}, ...)"

    # -- building ---------------------------------------------------------------------
    def build(self, env: Any = None, logger_creator: Any = None, executor: Any = None) -> Any:
        """The algorithm this config describes (``algo_class(config=self)``); its env
        runners run on ``executor`` (default: the current executor)."""
        if self.algo_class is None:
            raise ValueError(f"{type(self).__name__} has no algorithm class: use an "
                             "algorithm's config (PPOConfig(), DQNConfig() ...)")
        config = self.copy()
        if env is not None:
            config.environment(env)
        return self.algo_class(config=config, logger_creator=logger_creator, executor=executor)

    build_algo = build

    def validate(self) -> None:
        """Raise ``ValueError`` on settings that cannot work together.
        Subclasses extend it (call ``super().validate()``)."""
        if self.env is None:
            raise ValueError("no environment: set one with config.environment('CartPole-v1') "
                             "(a gymnasium id, a register_env name or an env class)")
        if not (isinstance(self.num_env_runners, int) and self.num_env_runners >= 0):
            raise ValueError(f"num_env_runners must be an int >= 0, not {self.num_env_runners!r}")
        if not (isinstance(self.num_envs_per_env_runner, int)
                and self.num_envs_per_env_runner >= 1):
            raise ValueError("num_envs_per_env_runner must be an int >= 1, not "
                             f"{self.num_envs_per_env_runner!r}")
        rfl = self.rollout_fragment_length
        if rfl != "auto" and not (isinstance(rfl, int) and rfl > 0):
            raise ValueError(f"rollout_fragment_length must be 'auto' or an int > 0, not {rfl!r}")
        if self.batch_mode != "truncate_episodes":
            raise ValueError(f"batch_mode={self.batch_mode!r} is not supported: fedexec.rl "
                             "samples fragments ('truncate_episodes'; episodes continue across "
                             "fragments and are bootstrapped with the value function)")
        if self.observation_filter not in ("NoFilter", "MeanStdFilter"):
            raise ValueError(f"observation_filter must be 'NoFilter' or 'MeanStdFilter', not "
                             f"{self.observation_filter!r}")
        if not (isinstance(self.train_batch_size, int) and self.train_batch_size > 0):
            raise ValueError(f"train_batch_size must be an int > 0, not {self.train_batch_size!r}")

    def get_rollout_fragment_length(self) -> int:
        """Steps per env per ``sample()``; ``"auto"``: the train batch split evenly
        over all runners' envs (so one round of sampling fills it)."""
        if self.rollout_fragment_length != "auto":
            return int(self.rollout_fragment_length)
        envs = max(1, self.num_env_runners) * self.num_envs_per_env_runner
        return max(1, math.ceil(self.train_batch_size / envs))

    # -- internals --------------------------------------------------------------------
    def _attribute(self, key: str) -> str | None:
        """The attribute an (old or new) key names; None for ignored keys."""
        key = type(self).renames.get(key, _RENAMES.get(key, key))
        return None if key in _IGNORED else key

    def _set(self, **kwargs: Any) -> AlgorithmConfig:
        for key, value in kwargs.items():
            if value is NotProvided:
                continue
            attr = self._attribute(key)
            if attr is None:
                continue
            if attr == "framework_str":
                value = _check_framework(value)
            elif attr == "vf_share_layers" and not hasattr(self, attr):
                attr, value = "model", {"vf_share_layers": value}  # PPO's old top-level key
            if attr == "model":
                value = {**self.model, **dict(value or {})}
            elif attr == "evaluation_config" and value is not None:
                value = {**self.evaluation_config, **dict(value)}
            if not hasattr(self, attr) or attr.startswith("_") or attr == "algo_class":
                known = ", ".join(sorted(k for k in self.to_dict() if not k.startswith("_")))
                raise ValueError(f"unknown setting {key!r} for {type(self).__name__}; "
                                 f"known settings: {known}")
            setattr(self, attr, value)
        return self
