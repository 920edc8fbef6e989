"""Trainables for the tune tests (importable by worker processes: ``tests`` is on
the path). Scripted ones report values fixed by their config, so a scheduler's
decisions can be predicted exactly."""

from __future__ import annotations

import json
import os
import signal
import time

from fedexec import tune


def quadratic(config):
    """One report: score = sqrt((x^2 + y^2) / 2)."""
    tune.report(score=((config["x"] ** 2 + config["y"] ** 2) / 2) ** 0.5)


def counting(config):
    """``config["n"]`` reports of ``step`` (and the pid), ``config.get("sleep")`` apart."""
    for i in range(config["n"]):
        time.sleep(config.get("sleep", 0))
        tune.report({"step": i, "pid": os.getpid(), "start": time.time()})


def checkpointing(config):
    """Counts to ``config["n"]``, saving its counter in a checkpoint each step;
    resumes from ``tune.get_checkpoint()``. With ``config["die_at"]`` it kills its
    own process (SIGKILL) at that count the first time (a marker file remembers),
    with ``config["raise_at"]`` it raises there while the marker is absent (with
    ``config["raise_once"]`` it creates the marker first, so a retry goes on)."""
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            start = json.load(f)["count"]
    for count in range(start + 1, config["n"] + 1):
        d = os.path.join(tune.get_context().get_trial_dir(), f"tmp_{count}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"count": count}, f)
        marker = config.get("marker")
        if marker and not os.path.exists(marker) and count == config.get("die_at"):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        if marker and not os.path.exists(marker) and count == config.get("raise_at"):
            if config.get("raise_once"):
                open(marker, "w").close()
            raise ValueError(f"failing at count {count}")
        tune.report({"count": count, "resumed": ckpt is not None},
                    checkpoint=tune.Checkpoint.from_directory(d))


def failing(config):
    if config["fail"]:
        raise ValueError("this trial fails on purpose")
    tune.report(score=1)


class Scripted(tune.Trainable):
    """Reports ``score = config["scores"][i]`` at iteration i+1 (the last value
    repeats); checkpointable: its state is the index and the trial that saved it.
    A checkpoint takes ``config["save_delay"][0]`` seconds when the list's second
    item is this trial's first score (slow to pause)."""

    def setup(self, config):
        self.scores = config["scores"]
        self.i = 0
        self.loaded_from = None
        self.delay = config.get("delay", 0)

    def step(self):
        time.sleep(self.delay)
        score = self.scores[min(self.i, len(self.scores) - 1)]
        self.i += 1
        return {"score": score, "loaded_from": self.loaded_from, "lr": self.config.get("lr")}

    def save_checkpoint(self, checkpoint_dir):
        delay, slow_score = self.config.get("save_delay", (0, None))
        if self.scores[0] == slow_score:
            time.sleep(delay)
        with open(os.path.join(checkpoint_dir, "state.json"), "w") as f:
            json.dump({"i": self.i, "owner": self.trial_id}, f)

    def load_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            state = json.load(f)
        self.i = state["i"]
        self.loaded_from = state["owner"]


class Accumulating(tune.Trainable):
    """score grows by ``config["lr"]`` per step (for PBT): state is the score."""

    def setup(self, config):
        self.score = 0.0
        self.loaded_from = None

    def step(self):
        time.sleep(0.01)
        self.score += self.config["lr"]
        return {"score": self.score, "loaded_from": self.loaded_from}

    def save_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "state.json"), "w") as f:
            json.dump({"score": self.score, "owner": self.trial_id}, f)

    def load_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            state = json.load(f)
        self.score = state["score"]
        self.loaded_from = state["owner"]

    def reset_config(self, new_config):  # a reused actor: the new trial starts afresh
        self.setup(new_config)
        return True


class StandInTrainer:
    """A stand-in for a ``fedexec.train`` trainer: the interface tune needs is
    ``as_trainable()`` returning a Trainable class whose config holds
    ``train_loop_config``."""

    def __init__(self, base_config):
        self.base_config = base_config

    def as_trainable(self):
        base = self.base_config

        class TrainerTrainable(tune.Trainable):
            def setup(self, config):
                self.loop_config = {**base, **config.get("train_loop_config", {})}

            def step(self):
                return {"loss": self.loop_config["lr"] * self.loop_config["scale"], "done": True}

        return TrainerTrainable


class _SquareWorker:
    """One worker of :class:`WorkerTrainer`: its share of a sum of squares."""

    def partial(self, values):
        return sum(v * v for v in values), os.getpid()


class WorkerTrainer:
    """The ``fedexec.train`` trainer protocol with real workers: ``as_trainable()``
    returns a Trainable that asks, besides its own (CPU-free) bundle, one CPU bundle
    per worker, starts ``num_workers`` worker actors in ``setup`` and ends them in
    ``cleanup``. Each step the workers compute the loss ``sum((lr * k)^2)`` over
    their shares of ``k = 0..7``."""

    def __init__(self, num_workers, train_loop_config=None):
        self.num_workers = num_workers
        self.train_loop_config = dict(train_loop_config or {})

    def as_trainable(self):
        num_workers, base = self.num_workers, self.train_loop_config

        class WorkerTrainable(tune.Trainable):
            @classmethod
            def default_resource_request(cls, config):
                return tune.PlacementGroupFactory([{"CPU": 0}] + [{"CPU": 1}] * num_workers)

            def setup(self, config):
                import fedexec

                self.loop_config = {**base, **config.get("train_loop_config", {})}
                ex = fedexec.current_executor()
                self.workers = [ex.options(num_cpus=1).actor(_SquareWorker)
                                for _ in range(num_workers)]

            def step(self):
                import fedexec

                lr = self.loop_config["lr"]
                shares = [[lr * k for k in range(i, 8, num_workers)] for i in range(num_workers)]
                parts = fedexec.get([w.partial.remote(s) for w, s in zip(self.workers, shares)])
                return {"loss": sum(p[0] for p in parts), "worker_pids": [p[1] for p in parts],
                        "trial_pid": os.getpid(), "start": time.time(), "done": True}

            def cleanup(self):
                import fedexec

                for worker in self.workers:
                    fedexec.current_executor().kill(worker)

        return WorkerTrainable


def stamped(config):
    """One report: when it ran (``start``) and where (``pid``)."""
    tune.report({"start": time.time(), "pid": os.getpid()})
