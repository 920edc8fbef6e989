"""The classic grid search: every (x, y) of a 5 x 5 grid, one trial each, and the
config with the lowest score.

    python examples/tune_grid.py

Results (params.json, result.json, progress.csv, TensorBoard files per trial) go
to ~/fedexec_results/<name>.
"""

from fedexec import tune


def train_fn(config):
    score = ((config["x"] ** 2 + config["y"] ** 2) / 2) ** 0.5
    tune.report(score=score)


def main():
    analysis = tune.run(
        train_fn,
        config={
            "x": tune.grid_search([-1, -0.5, 0, 0.5, 1]),
            "y": tune.grid_search([-1, -0.5, 0, 0.5, 1]),
        },
    )
    best = analysis.get_best_config(metric="score", mode="min")
    print("Best config:", best)
    assert best == {"x": 0, "y": 0}


if __name__ == "__main__":
    main()
