"""Classic RaySGD-style training: a small ResNet on synthetic CIFAR-shaped data,
data-parallel on two workers, with the creator functions of the classic API.

    python examples/train_classic.py

Same program shape as a RaySGD script (``ray.util.sgd`` -> ``fedexec.train.sgd``).
"""

import os
import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fedexec
from fedexec.train.sgd import TorchTrainer, TrainingOperator


class Block(nn.Module):
    """A residual block: two 3x3 convolutions and a shortcut."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet for 3x32x32 images."""

    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.layers = nn.Sequential(Block(width, width), Block(width, 2 * width, stride=2),
                                    Block(2 * width, 4 * width, stride=2))
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        out = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def cifar_like(n, seed):
    """``n`` 3x32x32 images of 10 classes: each class a fixed pattern plus noise."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(10, 3, 32, 32, generator=g)
    g.manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = patterns[labels] + 0.5 * torch.randn(n, 3, 32, 32, generator=g)
    return TensorDataset(images, labels)


def model_creator(config):
    return ResNet()


def optimizer_creator(model, config):
    return torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)


def data_creator(config):
    train = DataLoader(cifar_like(512, seed=1), batch_size=config["batch_size"], shuffle=True)
    val = DataLoader(cifar_like(256, seed=2), batch_size=config["batch_size"])
    return train, val


def main():
    fedexec.init()
    operator = TrainingOperator.from_creators(model_creator, optimizer_creator, data_creator,
                                              loss_creator=nn.CrossEntropyLoss)
    trainer = TorchTrainer(training_operator_cls=operator, num_workers=2, use_gpu=False,
                           config={"lr": 0.1, "batch_size": 32})
    for _ in range(3):
        stats = trainer.train()
        print("train:", stats)
        print("validate:", trainer.validate())
    path = os.path.join(tempfile.mkdtemp(), "resnet.pt")
    torch.save(trainer.state_dict(), path)
    model = trainer.get_model()
    model.load_state_dict(torch.load(path)["model"])
    print("saved the trained model's state to", path)
    trainer.shutdown()
    fedexec.shutdown()


if __name__ == "__main__":
    main()
