"""Config builders: modern and old spellings, dicts, validation."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from fedexec.rl import AlgorithmConfig, PPOConfig


def test_builder_sets_settings_and_to_dict_shows_modern_names():
    config = (PPOConfig()
              .environment("CartPole-v1", env_config={"a": 1})
              .env_runners(num_env_runners=3, num_envs_per_env_runner=2,
                           rollout_fragment_length="auto", observation_filter="MeanStdFilter")
              .training(gamma=0.9, lr=3e-4, train_batch_size=1000, minibatch_size=64,
                        num_epochs=4, clip_param=0.1, lambda_=0.95,
                        model={"fcnet_hiddens": [32]})
              .resources(num_gpus=0).evaluation(evaluation_interval=2).debugging(seed=3))
    d = config.to_dict()
    assert d["num_env_runners"] == 3 and d["num_epochs"] == 4 and d["minibatch_size"] == 64
    assert d["lambda"] == 0.95 and d["framework"] == "torch" and d["env"] == "CartPole-v1"
    assert "num_workers" not in d and "num_sgd_iter" not in d
    assert d["model"]["fcnet_hiddens"] == [32]
    assert d["model"]["fcnet_activation"] == "tanh"  # merged into the defaults
    assert config.get_rollout_fragment_length() == 167  # ceil(1000 / (3 * 2))
    assert PPOConfig.from_dict(d) == config


def test_classic_defaults():
    config = PPOConfig()
    assert (config.lr, config.train_batch_size, config.minibatch_size, config.num_epochs) == \
        (5e-5, 4000, 128, 30)
    assert config.model["fcnet_hiddens"] == [256, 256] and config.clip_param == 0.3


def test_old_spellings_on_the_builder_with_the_tf_warning():
    with pytest.warns(UserWarning, match="runs this config on torch"):
        config = (PPOConfig().framework("tf")
                  .rollouts(num_rollout_workers=1, num_envs_per_worker=2)
                  .training(num_sgd_iter=6, sgd_minibatch_size=32))
    assert (config.num_env_runners, config.num_envs_per_env_runner) == (1, 2)
    assert (config.num_epochs, config.minibatch_size) == (6, 32)
    assert config.framework_str == "torch"


def test_old_spellings_in_a_flat_dict():
    with pytest.warns(UserWarning, match="tf2"):
        config = PPOConfig.from_dict({
            "env": "CartPole-v1", "framework": "tf2", "num_workers": 1, "num_sgd_iter": 6,
            "sgd_minibatch_size": 64, "lambda": 0.9, "enable_connectors": True,
            "observation_filter": "MeanStdFilter", "vf_share_layers": True,
            "model": {"fcnet_hiddens": [32], "fcnet_activation": "linear"}})
    assert config.num_env_runners == 1 and config.num_epochs == 6
    assert config.lambda_ == 0.9 and config.observation_filter == "MeanStdFilter"
    assert config.model["vf_share_layers"] is True
    assert config["num_workers"] == 1 and config["lr"] == 5e-5  # classic dict reads


def test_torch_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PPOConfig().framework("torch")


def test_unknown_settings_and_bad_values_are_errors():
    with pytest.raises(ValueError, match="unknown setting 'clip_parm'"):
        PPOConfig().training(clip_parm=0.2)
    with pytest.raises(ValueError, match="framework='jax'"):
        PPOConfig().framework("jax")
    with pytest.raises(ValueError, match="no environment"):
        PPOConfig().validate()
    with pytest.raises(ValueError, match="minibatch_size"):
        PPOConfig().environment("CartPole-v1").training(train_batch_size=10).validate()
    with pytest.raises(ValueError, match="algorithm class"):
        AlgorithmConfig().environment("CartPole-v1").build()


def test_importing_fedexec_rl_imports_neither_torch_nor_gymnasium():
    code = ("import sys, fedexec.rl; from fedexec.rl import AlgorithmConfig, register_env; "
            "from fedexec import tune; tune.register_trainable; "
            "print(sorted(m for m in ('torch', 'gymnasium') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
