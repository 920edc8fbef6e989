"""A small ConvNet on scikit-learn's bundled 8x8 digits, tuned with ASHA: 30
samples of a learning rate (``tune.choice``) and a momentum (``tune.uniform``);
ASHA stops the trials that fall behind early.

    python examples/tune_digits.py

Needs torch and scikit-learn (``pip install "fedexec[ml]"``).
"""

from __future__ import annotations

import numpy as np

from fedexec import tune

MAX_EPOCHS = 10


def load_data():
    """The digits as (train, validation) tensors: images scaled to [0, 1]."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.tensor(np.random.default_rng(0).permutation(len(y)))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def make_model():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def make_trainable(report):
    """The training function, reporting through ``report`` (``tune.report``)."""

    def train_digits(config):
        import torch
        from torch import nn

        torch.set_num_threads(1)
        torch.manual_seed(0)
        (x_train, y_train), (x_val, y_val) = load_data()
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"],
                                    momentum=config["momentum"])
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(MAX_EPOCHS):
            model.train()
            for i in range(0, len(y_train), 32):
                optimizer.zero_grad()
                loss_fn(model(x_train[i:i + 32]), y_train[i:i + 32]).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
            report({"mean_accuracy": accuracy})

    return train_digits


SEARCH_SPACE = {"lr": tune.choice([0.001, 0.01, 0.05, 0.1]), "momentum": tune.uniform(0.1, 0.9)}


def main():
    from fedexec.tune.schedulers import ASHAScheduler

    tuner = tune.Tuner(
        make_trainable(tune.report),
        param_space=SEARCH_SPACE,
        tune_config=tune.TuneConfig(
            metric="mean_accuracy", mode="max", num_samples=30,
            scheduler=ASHAScheduler(max_t=MAX_EPOCHS, grace_period=1, reduction_factor=2)),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(f"Best config: {best.config}")
    print(f"Best validation accuracy: {best.metrics['mean_accuracy']:.3f}")
    assert best.metrics["mean_accuracy"] > 0.9


if __name__ == "__main__":
    main()
