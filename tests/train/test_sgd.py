"""The classic RaySGD ``TorchTrainer`` (``fedexec.train.sgd``)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fedexec.train.sgd import TorchTrainer, TrainingOperator


def model_creator(config):
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def optimizer_creator(model, config):
    return torch.optim.SGD(model.parameters(), lr=config.get("lr", 0.5))


def data_creator(config):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x[:, :3].argmax(1)  # learnable: the class is the largest of the first 3 features
    train = DataLoader(TensorDataset(x, y), batch_size=config.get("batch_size", 8), shuffle=True)
    val = DataLoader(TensorDataset(x, y), batch_size=16)
    return train, val


Operator = TrainingOperator.from_creators(model_creator, optimizer_creator, data_creator,
                                          loss_creator=torch.nn.CrossEntropyLoss)


@pytest.fixture
def trainer(native_ex):
    t = TorchTrainer(training_operator_cls=Operator, config={"lr": 0.5}, num_workers=2,
                     executor=native_ex)
    yield t
    t.shutdown()


@pytest.mark.timeout(180)
def test_train_validate_and_state(trainer, tmp_path):
    before = trainer.validate()
    assert before["num_samples"] == 64 and 0 <= before["val_accuracy"] <= 1
    for _ in range(5):
        stats = trainer.train()
    assert stats["epoch"] == 5 and stats["num_samples"] == 64  # one pass, split in two
    assert stats["batch_count"] == 8  # 32 samples / 8 per batch, on each of 2 workers
    after = trainer.validate()
    assert after["val_loss"] < before["val_loss"]
    assert after["val_accuracy"] > before["val_accuracy"]
    assert trainer.train(num_steps=1)["num_samples"] == 16
    state = trainer.state_dict()
    assert state["epoch"] == 6 and set(state["model"]) == {"weight", "bias"}
    assert "state" in state["optimizer"]
    at_state = trainer.validate()
    per_rank = trainer.validate(reduce_results=False)
    assert len(per_rank) == 2 and sum(r["num_samples"] for r in per_rank) == 64
    model = trainer.get_model()
    assert isinstance(model, torch.nn.Linear)
    assert torch.equal(model.weight, state["model"]["weight"])
    path = trainer.save(str(tmp_path / "trainer.pt"))
    trainer.train()
    assert not torch.equal(trainer.state_dict()["model"]["weight"], state["model"]["weight"])
    trainer.load(path)
    again = trainer.state_dict()
    assert again["epoch"] == 6 and torch.equal(again["model"]["weight"], state["model"]["weight"])
    assert trainer.validate()["val_loss"] == pytest.approx(at_state["val_loss"])


class Subclassed(TrainingOperator):
    def setup(self, config):
        model = model_creator(config)
        opt = optimizer_creator(model, config)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        self.model_, self.opt_, self.sched_ = self.register(
            models=model, optimizers=opt, schedulers=sched)
        self.register_data(train_loader=data_creator(config)[0],
                           validation_loader=data_creator(config)[1])
        self.steps = 0

    def train_batch(self, batch, batch_info):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.model_(x), y)
        self.opt_.zero_grad()
        loss.backward()
        self.opt_.step()
        self.steps += 1
        return {"train_loss": loss.item(), "num_samples": len(y)}

    def validate_batch(self, batch, batch_info):
        x, y = batch
        return {"val_loss": torch.nn.functional.cross_entropy(self.model_(x), y).item(),
                "num_samples": len(y)}

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


@pytest.mark.timeout(180)
def test_a_subclassed_operator_with_a_scheduler_fp16_and_one_worker(native_ex):
    t = TorchTrainer(training_operator_cls=Subclassed, num_workers=1, use_fp16=True,
                     use_tqdm=True, scheduler_step_freq="epoch", executor=native_ex)
    try:
        stats = t.train()
        assert stats["num_samples"] == 64
        state = t.state_dict()
        assert state["operator"] == {"steps": 8}
        assert state["scheduler"]["last_epoch"] == 1
        assert "val_accuracy" not in t.validate()  # the operator gives no accuracy
    finally:
        t.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        t.train()


def test_bad_arguments():
    with pytest.raises(TypeError, match="TrainingOperator"):
        TorchTrainer(training_operator_cls=object)
    with pytest.raises(ValueError, match="backend"):
        TorchTrainer(training_operator_cls=Operator, backend="mpi")


class DiesOnce(TrainingOperator):
    """Rank 1 SIGKILLs its own process at its third batch, the first time (a
    marker file remembers)."""

    def setup(self, config):
        model = model_creator(config)
        self.register(models=model, optimizers=optimizer_creator(model, config),
                      criterion=torch.nn.CrossEntropyLoss())
        self.register_data(train_loader=data_creator(config)[0],
                           validation_loader=data_creator(config)[1])

    def train_batch(self, batch, batch_info):
        import os
        import signal

        marker = os.path.join(self.config["out"], "killed")
        if self.world_rank == 1 and batch_info["batch_idx"] == 2 and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().train_batch(batch, batch_info)


@pytest.mark.timeout(240)
def test_a_sigkilled_worker_is_replaced_and_the_epoch_rerun(native_ex, tmp_path):
    t = TorchTrainer(training_operator_cls=DiesOnce, config={"out": str(tmp_path)},
                     num_workers=2, executor=native_ex)
    try:
        t.train()  # epoch 1, no failure
        first = t.state_dict()["model"]["weight"]
        stats = t.train(max_retries=1)  # rank 1 dies in epoch 2; it runs again
        assert (tmp_path / "killed").exists()
        assert stats["epoch"] == 2 and stats["num_samples"] == 64
        assert t.state_dict()["epoch"] == 2
        assert not torch.equal(t.state_dict()["model"]["weight"], first)
        assert t.validate()["num_samples"] == 64
    finally:
        t.shutdown()


@pytest.mark.timeout(240)
def test_without_retries_a_dead_worker_is_an_error(native_ex, tmp_path):
    import fedexec

    t = TorchTrainer(training_operator_cls=DiesOnce, config={"out": str(tmp_path)},
                     num_workers=2, executor=native_ex)
    try:
        with pytest.raises(fedexec.exceptions.FedexecError):
            t.train(max_retries=0)
    finally:
        t.shutdown()
