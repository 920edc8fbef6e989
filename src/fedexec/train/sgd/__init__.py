"""``fedexec.train.sgd``: the classic RaySGD API, a thin layer over
``fedexec.train``'s worker group and ``TorchConfig``::

    from fedexec.train.sgd import TorchTrainer, TrainingOperator
    Op = TrainingOperator.from_creators(model_creator, optimizer_creator, data_creator,
                                        loss_creator=torch.nn.CrossEntropyLoss)
    trainer = TorchTrainer(training_operator_cls=Op, config={"lr": 0.01}, num_workers=2)
    trainer.train(); trainer.validate(); torch.save(trainer.state_dict(), "model.pt")
    trainer.shutdown()
"""

from __future__ import annotations

from .operator import TrainingOperator
from .trainer import TorchTrainer

__all__ = ["TorchTrainer", "TrainingOperator"]
