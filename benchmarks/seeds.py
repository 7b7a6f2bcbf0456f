"""The seed tutorials' own training loops beside the imgcls recipes that replace them, on 2 CPU cores, in one run.

    python benchmarks/seeds.py [--tree /tmp/seedtree] [--runs-dir /tmp/bench-seeds] [--only 003,000,004]
        [--quick] [--out /tmp/seeds-bench.json]

Each side is a new process: the tutorial loop is this file run with --tutorial (its code as the tutorial writes
it, with timers around its train and validation phases), imgcls is `PYTHONPATH=<tree>/src python -m imgcls train
... --seed 42 --no-report` (the tree is a copy of the source, e.g. `cp -r src pyproject.toml /tmp/seedtree/`).
Both use torch's default thread count; the tutorials' DataLoader workers stay as written. The data is real
Fashion-MNIST (Debian's dataset-fashion-mnist), the offline stand-in for the tutorials' X-rays, MNIST, CIFAR-10
and monkeypox images.

1. 003 (MS-Learn PyTorch path), pytorchcv's train()/train_epoch()/validate() (no shuffling, ToTensor only,
   validated on the test set every epoch) against the recipes seed003-mnist-cnn (multi-layer CNN, Adam 0.01,
   batch 128, 5 epochs), seed003-mnist-mlp (784-100-10; the tutorial's LogSoftmax(dim=0) as written, and with
   dim=1 for reference) and seed003-lenet-cifar10 (LeNet, SGD 0.001 momentum 0.9, batch 14, 3 epochs, on
   Fashion-MNIST at 32 px with 3 identical channels on both sides): 60,000 training and 10,000 test images.
2. 000 (ViT-B/16 fine-tuning, "3 minutes per epoch"): the tutorial's ImageFolder/random_split/DataLoader
   (batch 32, 4 workers)/train+val phases against seed000-vit-xray, on a Shirt vs T-shirt/top PNG folder, one
   epoch each, both from the same random init of timm vit_base_patch16_224 (no pretrained weights offline): the
   training and validation rates, and the epoch time they project for the tutorial's 1,120 + 480 images.
3. 004 (DenseNet-121 + SE from scratch, 224 px): the tutorial's model code (its SE output discarded, 1000
   outputs), train() and test() against seed004-densenet-se on the same kind of folder.

Times: the training phases and whole epochs (train + validation) as each loop times them (imgcls: its
history.csv), launch to the start of epoch 1 (for imgcls this holds --precision auto's timed steps, cached in
RUNS_DIR/cache for later runs of the same model), and launch to exit. Before and after the runs it measures the
host's matmul peaks (benchmarks/host.py). Prints a markdown table per experiment and writes everything to --out
as JSON. --quick: tiny sizes, imgcls at --precision fp32 (no timed steps), to check the script end to end.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from host import describe, host_speed  # noqa: E402

SEED = 42
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SHIRT, TSHIRT = 6, 0  # Fashion-MNIST labels of the two-class stand-in
TUTORIAL_000_IMAGES = (1120, 480)  # the tutorial's 1,600 X-rays split 70/30

# Two bugs of the measured tree, worked around on the imgcls side (and said in the tables): with a recipe's
# `pretrained: true`, --weights FILE does not stop imgcls from fetching hub weights first (offline: an error after
# about a minute of retries), so a config sets pretrained: false; and `threshold: auto` fails after training
# (ThresholdRule.__str__ formats a None target), so the decision is argmax, as in the tutorials.
NO_HUB_WEIGHTS = "model:\n  pretrained: false\n"
ARGMAX = ["--threshold", "argmax"]
WORKAROUNDS = ("imgcls ran with `--threshold argmax` (the recipe's `threshold: auto` fails after training in this "
               "tree) and, for ViT-B/16, a config with `pretrained: false` beside `--weights` (the recipe's "
               "`pretrained: true` makes imgcls fetch hub weights first, offline an error).")

FULL = {"003": {"limit": None, "epochs": None, "imgcls": []}, "000": {"per_class": 160, "epochs": 1, "imgcls": []},
        "004": {"per_class": 250, "epochs": 2, "imgcls": []}}
QUICK_IMGCLS = ["--precision", "fp32"]  # --precision auto times 8 steps first: minutes at 224 px
QUICK = {"003": {"limit": 1000, "epochs": 1, "imgcls": QUICK_IMGCLS},
         "000": {"per_class": 6, "epochs": 1, "imgcls": QUICK_IMGCLS},
         "004": {"per_class": 6, "epochs": 1, "imgcls": QUICK_IMGCLS}}


# --- data ---------------------------------------------------------------------------------------------------------

def fashion_mnist_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels) of the 'train' or 't10k' IDX files."""
    with gzip.open(FASHION_MNIST / f"{split}-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST / f"{split}-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images, labels


def torchvision_root(root: Path) -> Path:
    """A root that torchvision's FashionMNIST(root, download=False) reads: the IDX files gunzipped into
    root/FashionMNIST/raw/."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for packed in FASHION_MNIST.glob("*.gz"):
        with gzip.open(packed) as source, (raw / packed.stem).open("wb") as target:
            shutil.copyfileobj(source, target)
    return root


def shirt_folder(root: Path, per_class: int) -> Path:
    """Real Fashion-MNIST Shirt and T-shirt/top training images, the first `per_class` of each, as 28-px PNGs in
    two class folders."""
    from PIL import Image

    images, labels = fashion_mnist_arrays("train")
    for name, label in (("shirt", SHIRT), ("tshirt", TSHIRT)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(labels == label)[:per_class]:
            Image.fromarray(images[index]).save(root / name / f"{index:05d}.png")
    return root


def random_vit_weights(path: Path) -> Path:
    """A seeded random init of timm vit_base_patch16_224 (1000-class head), saved as safetensors: the common
    start of both sides of experiment 000 in place of the ImageNet weights that are not reachable offline."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    model = timm.create_model("vit_base_patch16_224", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# --- the tutorials' loops (run in a new process: this file with --tutorial) ---------------------------------------

def pytorchcv_train(net, train_loader, test_loader, optimizer=None, lr=0.01, epochs=10, loss_fn=None) -> dict:
    """pytorchcv.py's train(), train_epoch() and validate() (seeds/003) as the tutorial writes them, with timers
    around each epoch's two calls."""
    import torch
    import torch.nn as nn

    loss_fn = loss_fn or nn.NLLLoss()
    default_device = "cpu"

    def train_epoch(net, dataloader, lr=0.01, optimizer=None, loss_fn=nn.NLLLoss()):
        optimizer = optimizer or torch.optim.Adam(net.parameters(), lr=lr)
        net.train()
        total_loss, acc, count = 0, 0, 0
        for features, labels in dataloader:
            optimizer.zero_grad()
            lbls = labels.to(default_device)
            out = net(features.to(default_device))
            loss = loss_fn(out, lbls)  # cross_entropy(out,labels)
            loss.backward()
            optimizer.step()
            total_loss += loss
            _, predicted = torch.max(out, 1)
            acc += (predicted == lbls).sum()
            count += len(labels)
        return total_loss.item() / count, acc.item() / count

    def validate(net, dataloader, loss_fn=nn.NLLLoss()):
        net.eval()
        count, acc, loss = 0, 0, 0
        with torch.no_grad():
            for features, labels in dataloader:
                lbls = labels.to(default_device)
                out = net(features.to(default_device))
                loss += loss_fn(out, lbls)
                pred = torch.max(out, 1)[1]
                acc += (pred == lbls).sum()
                count += len(labels)
        return loss.item() / count, acc.item() / count

    optimizer = optimizer or torch.optim.Adam(net.parameters(), lr=lr)
    res = {"train_loss": [], "train_acc": [], "val_loss": [], "val_acc": [], "train_s": [], "val_s": [],
           "started_at": time.time()}
    for ep in range(epochs):
        started = time.perf_counter()
        tl, ta = train_epoch(net, train_loader, optimizer=optimizer, lr=lr, loss_fn=loss_fn)
        trained = time.perf_counter()
        vl, va = validate(net, test_loader, loss_fn=loss_fn)
        res["train_s"].append(trained - started)
        res["val_s"].append(time.perf_counter() - trained)
        print(f"Epoch {ep:2}, Train acc={ta:.3f}, Val acc={va:.3f}, Train loss={tl:.3f}, Val loss={vl:.3f}",
              flush=True)
        for key, value in (("train_loss", tl), ("train_acc", ta), ("val_loss", vl), ("val_acc", va)):
            res[key].append(value)
    return res


def tutorial_003_net(model: str):
    """The tutorial's network: 'cnn' (MultiLayerCNN), 'mlp' (its hidden-layer MLP, LogSoftmax(dim=0) as written),
    'mlp-dim1' (the same with dim=1) or 'lenet' (its CIFAR-10 LeNet)."""
    import torch.nn as nn

    class MultiLayerCNN(nn.Module):
        def __init__(self):
            super(MultiLayerCNN, self).__init__()
            self.conv1 = nn.Conv2d(1, 10, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(10, 20, 5)
            self.fc = nn.Linear(320, 10)

        def forward(self, x):
            x = self.pool(nn.functional.relu(self.conv1(x)))
            x = self.pool(nn.functional.relu(self.conv2(x)))
            x = x.view(-1, 320)
            x = nn.functional.log_softmax(self.fc(x), dim=1)
            return x

    class LeNet(nn.Module):
        def __init__(self):
            super(LeNet, self).__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.conv3 = nn.Conv2d(16, 120, 5)
            self.flat = nn.Flatten()
            self.fc1 = nn.Linear(120, 64)
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            x = self.pool(nn.functional.relu(self.conv1(x)))
            x = self.pool(nn.functional.relu(self.conv2(x)))
            x = nn.functional.relu(self.conv3(x))
            x = self.flat(x)
            x = nn.functional.relu(self.fc1(x))
            x = self.fc2(x)
            return x

    if model == "cnn":
        return MultiLayerCNN()
    if model == "lenet":
        return LeNet()
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10),
                         nn.LogSoftmax(dim=0 if model == "mlp" else 1))


def tutorial_003(spec: dict) -> dict:
    """seeds/003: the network on torchvision's FashionMNIST through pytorchcv's train(): MNIST's loaders (ToTensor,
    no shuffling; batch 128 for the CNN as load_mnist(batch_size=128), 64 for the MLP) or cifar.py's (32 px,
    Normalize 0.5, batch 14, training shuffled) with SGD and CrossEntropyLoss for LeNet."""
    import torch
    import torch.nn as nn
    import torchvision
    from torchvision.transforms import ToTensor

    torch.manual_seed(SEED)  # the tutorial sets none
    model, root = spec["model"], spec["root"]
    if model == "lenet":
        transform = torchvision.transforms.Compose([
            torchvision.transforms.Resize(32), torchvision.transforms.Grayscale(3),  # 28-px gray -> 3 x 32 x 32
            torchvision.transforms.ToTensor(), torchvision.transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    else:
        transform = ToTensor()
    data_train = torchvision.datasets.FashionMNIST(root, download=False, train=True, transform=transform)
    data_test = torchvision.datasets.FashionMNIST(root, download=False, train=False, transform=transform)
    if spec["limit"]:
        data_train = torch.utils.data.Subset(data_train, range(spec["limit"]))
        data_test = torch.utils.data.Subset(data_test, range(spec["limit"] // 4))
    net = tutorial_003_net(model)
    if model == "lenet":
        train_loader = torch.utils.data.DataLoader(data_train, batch_size=14, shuffle=True)
        test_loader = torch.utils.data.DataLoader(data_test, batch_size=14, shuffle=False)
        opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
        hist = pytorchcv_train(net, train_loader, test_loader, epochs=spec["epochs"], optimizer=opt,
                               loss_fn=nn.CrossEntropyLoss())
    else:
        batch_size = 128 if model == "cnn" else 64
        train_loader = torch.utils.data.DataLoader(data_train, batch_size=batch_size)
        test_loader = torch.utils.data.DataLoader(data_test, batch_size=batch_size)
        hist = pytorchcv_train(net, train_loader, test_loader, epochs=spec["epochs"])
    return {"train_images": len(data_train), "val_images": len(data_test), "test_images": len(data_test),
            "started_at": hist["started_at"], "train_s": hist["train_s"], "val_s": hist["val_s"], "val_acc": hist["val_acc"],
            "test_accuracy": hist["val_acc"][-1]}


def tutorial_000(spec: dict) -> dict:
    """seeds/000: ImageFolder, random_split 70/30 after torch.manual_seed(0), the train transform set on the
    dataset both splits share, loaders of batch 32 with shuffle=True and 4 workers, timm's ViT-B/16 with a new
    head, Adam at its default rate, and the train + val phases of each epoch. 224 px instead of its 100 (timm's
    vit_base_patch16_224 refuses 100 px: the error is recorded); `pretrained=True` reads the shared random init."""
    import copy

    import timm
    import torch
    from torch import nn, optim
    from torch.optim import lr_scheduler
    from torchvision import datasets, transforms

    device = torch.device("cpu")
    data_dir = spec["folder"]
    img_height = 224  # the tutorial: 100
    img_width = 224
    data_transforms = {
        "train": transforms.Compose([
            transforms.RandomResizedCrop(img_height), transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(), transforms.RandomRotation(0.2), transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]),
        "val": transforms.Compose([
            transforms.Resize((img_height, img_width)), transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]),
    }
    full_dataset = datasets.ImageFolder(data_dir)
    full_size = len(full_dataset)
    train_size = int(0.7 * full_size)
    val_size = full_size - train_size
    torch.manual_seed(0)
    train_dataset, val_dataset = torch.utils.data.random_split(full_dataset, [train_size, val_size])
    train_dataset.dataset.transform = data_transforms["train"]  # val_dataset shares it: augmented too
    batch_size = 32
    train_dataloader = torch.utils.data.DataLoader(train_dataset, batch_size=batch_size, shuffle=True, num_workers=4)
    val_dataloader = torch.utils.data.DataLoader(val_dataset, batch_size=batch_size, shuffle=True, num_workers=4)
    dataloaders = {"train": train_dataloader, "val": val_dataloader}
    dataset_sizes = {"train": len(train_dataset), "val": len(val_dataset)}
    class_names = full_dataset.classes

    model = timm.create_model("vit_base_patch16_224", pretrained=True,
                              pretrained_cfg_overlay={"file": spec["weights"]})
    num_ftrs = model.head.in_features
    model.head = nn.Linear(num_ftrs, len(class_names))
    model = model.to(device)
    try:
        model(torch.zeros(1, 3, 100, 100))
        refused = None
    except AssertionError as error:
        refused = str(error)

    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters())
    exp_lr_scheduler = lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)  # noqa: F841 (never stepped there)
    num_epochs = spec["epochs"]
    best_model_wts = copy.deepcopy(model.state_dict())
    best_acc = 0.0
    seconds, started_at = {"train": [], "val": []}, time.time()
    for epoch in range(num_epochs):
        for phase in ["train", "val"]:
            started = time.perf_counter()
            if phase == "train":
                model.train()
            else:
                model.eval()
            running_loss = 0.0
            running_corrects = 0
            for inputs, labels in dataloaders[phase]:
                inputs = inputs.to(device)
                labels = labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data)
            epoch_loss = running_loss / dataset_sizes[phase]
            epoch_acc = (running_corrects.double() / dataset_sizes[phase]).item()
            seconds[phase].append(time.perf_counter() - started)
            print("{} Loss: {:.4f} Acc: {:.4f}".format(phase, epoch_loss, epoch_acc), flush=True)
            if phase == "val" and epoch_acc > best_acc:
                best_acc = epoch_acc
                best_model_wts = copy.deepcopy(model.state_dict())  # noqa: F841 (costs what it costs there)
    return {"train_images": dataset_sizes["train"], "val_images": dataset_sizes["val"], "started_at": started_at,
            "train_s": seconds["train"], "val_s": seconds["val"], "refused_at_100px": refused}


def tutorial_004_model():
    """seeds/004's DenseNet-121 + SE, its code as written: forward() computes self.se(features) and then pools the
    unweighted features, and DenseNet() keeps num_classes=1000."""
    from collections import OrderedDict

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.nn import init

    class DenseLayer(nn.Sequential):
        def __init__(self, num_input_features, growth_rate, bn_size, drop_rate):
            super().__init__()
            self.add_module("norm1", nn.BatchNorm2d(num_input_features))
            self.add_module("relu1", nn.ReLU(inplace=True))
            self.add_module("conv1", nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1,
                                               bias=False))
            self.add_module("norm2", nn.BatchNorm2d(bn_size * growth_rate))
            self.add_module("relu2", nn.ReLU(inplace=True))
            self.add_module("conv2", nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1,
                                               padding=1, bias=False))
            self.drop_rate = drop_rate

        def forward(self, x):
            t = super().forward(x)
            if self.drop_rate > 0:
                t = F.dropout(t, p=self.drop_rate, training=self.training)
            return torch.cat([x, t], 1)

    class DenseBlock(nn.Sequential):
        def __init__(self, num_layers, num_input_features, bn_size, growth_rate, drop_rate):
            super().__init__()
            for i in range(num_layers):
                layer = DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size, drop_rate)
                self.add_module("denselayer%d" % (i + 1), layer)

    class Transition(nn.Sequential):
        def __init__(self, num_input_feature, num_output_features):
            super().__init__()
            self.add_module("norm", nn.BatchNorm2d(num_input_feature))
            self.add_module("relu", nn.ReLU(inplace=True))
            self.add_module("conv", nn.Conv2d(num_input_feature, num_output_features, kernel_size=1, stride=1,
                                              bias=False))
            self.add_module("pool", nn.AvgPool2d(2, stride=2))

    class SEAttention(nn.Module):
        def __init__(self, channel=512, reduction=16):
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(
                nn.Linear(channel, channel // reduction, bias=False),
                nn.ReLU(inplace=True),
                nn.Linear(channel // reduction, channel, bias=False),
                nn.Sigmoid()
            )

        def init_weights(self):
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    init.kaiming_normal_(m.weight, mode="fan_out")
                    if m.bias is not None:
                        init.constant_(m.bias, 0)
                elif isinstance(m, nn.BatchNorm2d):
                    init.constant_(m.weight, 1)
                    init.constant_(m.bias, 0)
                elif isinstance(m, nn.Linear):
                    init.normal_(m.weight, std=0.001)
                    if m.bias is not None:
                        init.constant_(m.bias, 0)

        def forward(self, x):
            b, c, _, _ = x.size()
            y = self.avg_pool(x).view(b, c)
            y = self.fc(y).view(b, c, 1, 1)
            return x * y.expand_as(x)

    class DenseNet(nn.Module):
        def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64,
                     bn_size=4, compression_rate=0.5, drop_rate=0, num_classes=1000):
            super().__init__()
            self.features = nn.Sequential(OrderedDict([
                ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(3, stride=2, padding=1))
            ]))
            num_features = num_init_features
            for i, num_layers in enumerate(block_config):
                block = DenseBlock(num_layers, num_features, bn_size, growth_rate, drop_rate)
                self.features.add_module("denseblock%d" % (i + 1), block)
                num_features += num_layers * growth_rate
                if i != len(block_config) - 1:
                    transition = Transition(num_features, int(num_features * compression_rate))
                    self.features.add_module("transition%d" % (i + 1), transition)
                    num_features = int(num_features * compression_rate)
            self.features.add_module("norm5", nn.BatchNorm2d(num_features))
            self.features.add_module("relu5", nn.ReLU(inplace=True))
            self.se = SEAttention(channel=1024, reduction=8)
            self.classifier = nn.Linear(num_features, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.bias, 0)
                    nn.init.constant_(m.weight, 1)
                elif isinstance(m, nn.Linear):
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0)

        def forward(self, x):
            features = self.features(x)
            out = self.se(features)
            out = F.avg_pool2d(features, 7, stride=1)
            out = out.view(features.size(0), -1)
            out = self.classifier(out)
            return out

    return DenseNet()


def tutorial_004(spec: dict) -> dict:
    """seeds/004: its seeds (428), ImageFolder at 224 px with ImageNet normalisation, random_split 80/20, loaders
    of batch 32 with shuffle=True, Adam 1e-4, its train() and test(), the best epoch picked on the test split."""
    import copy
    import random

    import torch
    import torch.nn as nn
    import torchvision.datasets as datasets
    import torchvision.transforms as transforms

    torch.manual_seed(428)
    random.seed(428)
    np.random.seed(428)
    device = torch.device("cpu")
    all_transforms = transforms.Compose([
        transforms.Resize([224, 224]),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    total_data = datasets.ImageFolder(spec["folder"], transform=all_transforms)
    train_size = int(0.8 * len(total_data))
    test_size = len(total_data) - train_size
    train_ds, test_ds = torch.utils.data.random_split(total_data, [train_size, test_size])
    batch_size = 32
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True)
    test_dl = torch.utils.data.DataLoader(test_ds, batch_size=batch_size, shuffle=True)
    model = tutorial_004_model().to(device)

    def train(dataloader, model, loss_fn, opt):
        size = len(dataloader.dataset)
        num_batches = len(dataloader)
        train_acc, train_loss = 0, 0
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            pred = model(X)
            loss = loss_fn(pred, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            train_acc += (pred.argmax(1) == y).type(torch.float).sum().item()
            train_loss += loss.item()
        train_acc /= size
        train_loss /= num_batches
        return train_acc, train_loss

    def test(dataloader, model, loss_fn):
        size = len(dataloader.dataset)
        num_batches = len(dataloader)
        test_acc, test_loss = 0, 0
        with torch.no_grad():
            for X, y in dataloader:
                X, y = X.to(device), y.to(device)
                pred = model(X)
                loss = loss_fn(pred, y)
                test_acc += (pred.argmax(1) == y).type(torch.float).sum().item()
                test_loss += loss.item()
        test_acc /= size
        test_loss /= num_batches
        return test_acc, test_loss

    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=0.0001)
    best_acc, seconds, test_accs, started_at = 0, {"train": [], "val": []}, [], time.time()
    for epoch in range(spec["epochs"]):
        started = time.perf_counter()
        model.train()
        epoch_train_acc, epoch_train_loss = train(train_dl, model, loss_fn, opt)
        trained = time.perf_counter()
        model.eval()
        epoch_test_acc, epoch_test_loss = test(test_dl, model, loss_fn)
        if epoch_test_acc > best_acc:
            best_acc = epoch_test_acc
            best_model = copy.deepcopy(model)  # noqa: F841 (the tutorial keeps it to save it)
        seconds["train"].append(trained - started)
        seconds["val"].append(time.perf_counter() - trained)
        test_accs.append(epoch_test_acc)
        print("epoch:%d, train_acc:%.1f%%, train_loss:%.3f, test_acc:%.1f%%, test_loss:%.3f"
              % (epoch + 1, epoch_train_acc * 100, epoch_train_loss, epoch_test_acc * 100, epoch_test_loss),
              flush=True)
    return {"train_images": train_size, "val_images": test_size, "test_images": test_size,
            "started_at": started_at, "train_s": seconds["train"], "val_s": seconds["val"], "val_acc": test_accs,
            "test_accuracy": test_accs[-1], "best_test_accuracy": best_acc}


TUTORIALS = {"003": tutorial_003, "000": tutorial_000, "004": tutorial_004}


# --- running the two sides ------------------------------------------------------------------------------------------

def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (/proc/stat), all processes."""
    user, nice, system, _, _, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_logged(command: list[str], log: Path, mark: str = "", env: dict | None = None,
               cwd: Path | None = None) -> dict:
    """Run `command`, its output (stdout and stderr as they come) to `log`: time.time() at launch, the wall
    seconds to exit, the seconds at which the first line starting with `mark` came, and the cores that other work
    on the machine kept busy meanwhile (the machine's busy CPU time less this process's and its children's, per
    wall second). Stops the benchmark on failure."""
    print(f"  {' '.join(command[1:])}", flush=True)
    busy, own = busy_cpu_seconds(), children_cpu_seconds() + time.process_time()
    launched, started, marked = time.time(), time.perf_counter(), None
    with log.open("w") as out, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                                env=env, cwd=cwd) as process:
        for line in process.stdout:
            out.write(line)
            if mark and marked is None and line.startswith(mark):
                marked = time.perf_counter() - started
    wall = time.perf_counter() - started
    own = children_cpu_seconds() + time.process_time() - own
    if process.returncode != 0:
        raise SystemExit(f"failed (exit {process.returncode}), log {log}:\n{log.read_text()[-3000:]}")
    other_cores = max(0.0, (busy_cpu_seconds() - busy - own) / wall)
    print(f"  done in {wall:.0f} s (other work on the machine: {other_cores:.2f} cores)", flush=True)
    return {"launched": launched, "wall_s": wall, "marked_s": marked, "other_cores": other_cores}


def run_tutorial(runs_dir: Path, name: str, seed: str, spec: dict) -> dict:
    """The tutorial loop `seed` in a new process; its measurements, with the process's wall time."""
    result = runs_dir / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--tutorial", seed, "--spec", json.dumps(spec),
               "--result", str(result)]
    process = run_logged(command, runs_dir / f"{name}.log")
    found = json.loads(result.read_text())
    train_images = found["train_images"] * len(found["train_s"])
    return {**found, "side": "tutorial", "wall_s": process["wall_s"], "other_cores": process["other_cores"],
            "before_s": found["started_at"] - process["launched"],
            "train_total_s": sum(found["train_s"]),
            "epochs_s": sum(found["train_s"]) + sum(found["val_s"]),
            "train_ips": train_images / sum(found["train_s"]),
            "train_ips_per_epoch": [found["train_images"] / s for s in found["train_s"]],
            "val_ips": found["val_images"] * len(found["val_s"]) / sum(found["val_s"])}


def run_imgcls(tree: Path, runs_dir: Path, name: str, args: list[str]) -> dict:
    """`python -m imgcls train ARGS --seed 42 --no-report` in a new process; its timings, precision, split sizes
    and test accuracy with the 95% interval, from the run folder."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), IMGCLS_CACHE_DIR=str(runs_dir / "cache"), COLUMNS="160",
               PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "imgcls", "train", *args, "--seed", str(SEED), "--no-report",
               "--runs-dir", str(runs_dir), "--name", name]
    process = run_logged(command, runs_dir / f"{name}.log", "epoch 1/", env=env, cwd=tree)
    first_epoch_line = process["marked_s"]
    run = runs_dir / name
    plan, summary = (json.loads((run / file).read_text()) for file in ("plan.json", "run.json"))
    with (run / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    counts = {split: sum(values) for split, values in summary["class_counts"].items()}
    train_s = [float(row["train_time_s"]) for row in rows]
    val_s = [float(row["epoch_time_s"]) - s for row, s in zip(rows, train_s)]
    test = json.loads((run / "metrics.json").read_text()).get("test", {})
    return {"side": "imgcls", "command": ["imgcls", *command[3:]], "wall_s": process["wall_s"],
            "other_cores": process["other_cores"],
            "before_s": first_epoch_line - float(rows[0]["epoch_time_s"]) if first_epoch_line else None,
            "train_images": counts["train"], "val_images": counts.get("val", 0), "test_images": counts.get("test", 0),
            "train_s": train_s, "val_s": val_s, "train_total_s": sum(train_s),
            "epochs_s": sum(float(row["epoch_time_s"]) for row in rows),
            "train_ips": counts["train"] * len(rows) / sum(train_s),
            "train_ips_per_epoch": [float(row["train_images_per_s"]) for row in rows],
            "val_ips": counts.get("val", 0) * len(rows) / sum(val_s) if sum(val_s) else None,
            "val_acc": [float(row["val_accuracy"]) for row in rows if row.get("val_accuracy")],
            "test_accuracy": test.get("accuracy", {}).get("value"), "test_ci95": test.get("accuracy", {}).get("ci95"),
            "precision": plan["precision"], "precision_reason": plan.get("precision_reason", ""),
            "channels": plan["channels"], "img_size": plan["img_size"], "workers": plan["workers"]}


# --- the three experiments ----------------------------------------------------------------------------------------

def experiment_003(tree: Path, runs_dir: Path, sizes: dict) -> dict:
    """The CNN, the MLP (as written and dim=1) and LeNet: tutorial loop, then the imgcls recipe."""
    root = str(torchvision_root(runs_dir / "torchvision"))
    imgcls_data = ["fashion-mnist", "--data-root", str(runs_dir / "datasets")]
    if sizes["limit"]:
        imgcls_data += ["--max-per-class", str(sizes["limit"] // 10)]
    pairs = {"cnn": ("seed003-mnist-cnn", 5, []), "mlp": ("seed003-mnist-mlp", 5, []),
             "lenet": ("seed003-lenet-cifar10", 3, ["--channels", "3"])}
    found = {}
    for model, (recipe, epochs, extra) in pairs.items():
        epochs = sizes["epochs"] or epochs
        spec = {"model": model, "root": root, "limit": sizes["limit"], "epochs": epochs}
        rows = [run_tutorial(runs_dir, f"003-{model}-tutorial", "003", spec)]
        if model == "mlp":
            rows.append(run_tutorial(runs_dir, "003-mlp-dim1-tutorial", "003", {**spec, "model": "mlp-dim1"}))
        rows.append(run_imgcls(tree, runs_dir, f"003-{model}-imgcls",
                               [*imgcls_data, "--recipe", recipe, "--epochs", str(epochs), *extra, *sizes["imgcls"]]))
        found[model] = {"recipe": recipe, "epochs": epochs, "rows": rows}
    return found


def experiment_000(tree: Path, runs_dir: Path, sizes: dict) -> dict:
    """ViT-B/16 from one random init: the tutorial's epoch, then imgcls's, on a Shirt vs T-shirt folder."""
    folder = shirt_folder(runs_dir / "shirts-000", sizes["per_class"])
    weights = random_vit_weights(runs_dir / "vit_base_patch16_224-random.safetensors")
    no_hub = runs_dir / "no-hub-weights.yaml"
    no_hub.write_text(NO_HUB_WEIGHTS)
    spec = {"folder": str(folder), "weights": str(weights), "epochs": sizes["epochs"]}
    rows = [run_tutorial(runs_dir, "000-vit-tutorial", "000", spec),
            run_imgcls(tree, runs_dir, "000-vit-imgcls", [
                str(folder), "--recipe", "seed000-vit-xray", "--config", str(no_hub), "--weights", str(weights),
                "--epochs", str(sizes["epochs"]), *ARGMAX, *sizes["imgcls"]])]
    for row in rows:
        train, val = TUTORIAL_000_IMAGES
        row["projected_epoch_s"] = train / row["train_ips"] + val / row["val_ips"]
    return {"images": 2 * sizes["per_class"], "epochs": sizes["epochs"], "rows": rows}


def experiment_004(tree: Path, runs_dir: Path, sizes: dict) -> dict:
    """DenseNet-121 + SE from scratch at 224 px: the tutorial's loop, then imgcls's recipe."""
    folder = shirt_folder(runs_dir / "shirts-004", sizes["per_class"])
    spec = {"folder": str(folder), "epochs": sizes["epochs"]}
    rows = [run_tutorial(runs_dir, "004-densenet-tutorial", "004", spec),
            run_imgcls(tree, runs_dir, "004-densenet-imgcls", [str(folder), "--recipe", "seed004-densenet-se",
                                                               "--epochs", str(sizes["epochs"]), *ARGMAX,
                                                               *sizes["imgcls"]])]
    return {"images": 2 * sizes["per_class"], "epochs": sizes["epochs"], "rows": rows}


# --- the tables ---------------------------------------------------------------------------------------------------

def wilson(accuracy: float, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion measured on n images."""
    z = 1.959964
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def accuracy_cell(row: dict) -> str:
    """Test accuracy with its 95% interval: imgcls's bootstrap one, or a Wilson interval for the tutorial's."""
    value = row.get("test_accuracy")
    if value is None:
        return "-"
    if row["side"] == "imgcls":
        low, high = row["test_ci95"]
        return f"{value:.4f} [{low:.4f}, {high:.4f}]"
    low, high = wilson(value, row["test_images"])
    return f"{value:.4f} [{low:.4f}, {high:.4f}] (Wilson)"


def side_name(row: dict) -> str:
    if row["side"] == "imgcls":
        return f"imgcls ({row['precision']}, {row['channels']} ch)"
    return "tutorial loop"


def split_cell(row: dict) -> str:
    return f"{row['train_images']:,} / {row['val_images']:,} / {row.get('test_images', 0):,}"


SPEED_COLUMNS = ("training phases s | epochs s (train + val) | before epoch 1 s | end-to-end s | training images/s | "
                 "other work, cores")


def speed_cells(row: dict) -> str:
    before = "?" if row["before_s"] is None else f"{row['before_s']:.1f}"
    return (f"{row['train_total_s']:.1f} | {row['epochs_s']:.1f} | {before} | {row['wall_s']:.1f} | "
            f"{row['train_ips']:,.{0 if row['train_ips'] >= 100 else 2}f} | {row['other_cores']:.2f}")


def ratio_line(tutorial: dict, imgcls: dict) -> str:
    return (f"imgcls / tutorial: training images/s x{imgcls['train_ips'] / tutorial['train_ips']:.2f}, "
            f"end-to-end wall x{imgcls['wall_s'] / tutorial['wall_s']:.2f}.")


def table_003(found: dict) -> list[str]:
    lines = ["### 003: MS-Learn PyTorch path (pytorchcv train()) vs seed003 recipes, real Fashion-MNIST", "",
             f"| network | side | train / val / test images | epochs | {SPEED_COLUMNS} | test accuracy [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for model, part in found.items():
        for row in part["rows"]:
            side = side_name(row) if row["side"] == "imgcls" else (
                "tutorial loop, LogSoftmax(dim=0) as written" if model == "mlp" and row is part["rows"][0]
                else "tutorial loop, dim=1" if model == "mlp" else "tutorial loop")
            lines.append(f"| {model} | {side} | {split_cell(row)} | {part['epochs']} | {speed_cells(row)} | "
                         f"{accuracy_cell(row)} |")
        notes.append(f"{model} ({part['recipe']}): " + ratio_line(part["rows"][0], part["rows"][-1]))
    return lines + ["", *notes, "",
                    "The tutorial validates on the test set every epoch (its last-epoch figure is shown); imgcls "
                    "holds out 10% of the training images for validation, keeps the best epoch there and scores "
                    "the test set once. LeNet: Fashion-MNIST resized to 32 px with the gray channel repeated 3 "
                    "times on both sides (`--channels 3`).", ""]


def table_000(found: dict) -> list[str]:
    tutorial, imgcls = found["rows"]
    train, val = TUTORIAL_000_IMAGES
    lines = [f"### 000: ViT-B/16 fine-tuning, one epoch, {found['images']} Shirt / T-shirt PNGs (28 px, upsampled "
             f"to 224)", "",
             f"| side | train / val / test images | {SPEED_COLUMNS} | validation images/s | projected epoch, "
             f"{train:,} train + {val} val images |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in found["rows"]:
        lines.append(f"| {side_name(row)} | {split_cell(row)} | {speed_cells(row)} | {row['val_ips']:.2f} | "
                     f"{row['projected_epoch_s']:.0f} s ({row['projected_epoch_s'] / 60:.1f} min) |")
    refused = tutorial.get("refused_at_100px")
    return lines + ["", ratio_line(tutorial, imgcls) + f" Projected epoch x"
                    f"{imgcls['projected_epoch_s'] / tutorial['projected_epoch_s']:.2f}.",
                    f"Both start from one seeded random init of timm vit_base_patch16_224 (no ImageNet weights "
                    f"offline), so accuracy after one epoch means nothing and is not shown. imgcls precision: "
                    f"{imgcls['precision']} ({imgcls['precision_reason']}). The tutorial's 100 px: "
                    + (f"refused by timm ({refused!r}); both sides use 224." if refused else "accepted (unexpected).")
                    + " " + WORKAROUNDS, ""]


def table_004(found: dict) -> list[str]:
    lines = [f"### 004: DenseNet-121 + SE from scratch at 224 px, {found['images']} Shirt / T-shirt PNGs, "
             f"{found['epochs']} epochs", "",
             f"| side | train / val / test images | {SPEED_COLUMNS} | per epoch | test accuracy, last epoch [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in found["rows"]:
        per_epoch = ", ".join(f"{value:.2f}" for value in row["train_ips_per_epoch"])
        lines.append(f"| {side_name(row)} | {split_cell(row)} | {speed_cells(row)} | {per_epoch} | "
                     f"{accuracy_cell(row)} |")
    tutorial, imgcls = found["rows"]
    return lines + ["", ratio_line(tutorial, imgcls),
                    f"Accuracy after {found['epochs']} epochs from scratch on so few images says little. The tutorial "
                    f"scores (and picks its best epoch on, best {tutorial['best_test_accuracy']:.4f}) its shuffled "
                    f"20% test split; imgcls holds out 10% for validation and scores a 20% test split once, "
                    f"precision {imgcls['precision']} ({imgcls['precision_reason']}). " + WORKAROUNDS, ""]


# --- main ---------------------------------------------------------------------------------------------------------

def machine_line() -> str:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path("/tmp/seedtree"), help="a copy of the source to run")
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/bench-seeds"), help="emptied first")
    parser.add_argument("--only", default="003,000,004", help="experiments, comma-separated")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and imgcls at --precision fp32: checks the script end to end")
    parser.add_argument("--out", type=Path, default=Path("/tmp/seeds-bench.json"))
    parser.add_argument("--tutorial", choices=TUTORIALS, help=argparse.SUPPRESS)  # a tutorial side's process
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tutorial:
        args.result.write_text(json.dumps(TUTORIALS[args.tutorial](json.loads(args.spec))))
        return

    started = time.perf_counter()
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree / "src"))  # host_speed reads the tree's imgcls
    shutil.rmtree(args.runs_dir, ignore_errors=True)
    args.runs_dir.mkdir(parents=True)
    sizes = QUICK if args.quick else FULL
    machine = machine_line()
    print(f"{machine}\nsource: {tree}\n", flush=True)
    load = os.getloadavg()[0]  # other work on the machine shows here (and in the matmul peaks)
    before = host_speed()
    experiments = {"003": (experiment_003, table_003), "000": (experiment_000, table_000),
                   "004": (experiment_004, table_004)}
    found, lines = {}, []
    for seed in args.only.split(","):
        run, table = experiments[seed]
        print(f"experiment {seed}", flush=True)
        found[seed] = run(tree, args.runs_dir, sizes[seed])
        lines += table(found[seed])
    after = host_speed()
    wall = time.perf_counter() - started
    header = [f"## Seed tutorials' loops vs imgcls recipes{' (--quick: tiny sizes)' if args.quick else ''}", "",
              f"`python benchmarks/{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}` on {machine}, "
              f"{time.strftime('%Y-%m-%d')}. {describe(before, after)} Load average before the run: {load:.2f}. "
              f"Data: real Fashion-MNIST, the stand-in for "
              f"the tutorials' MNIST/CIFAR-10, chest X-rays and monkeypox photos. Each side is a new process, run "
              f"one after the other; whole run {wall / 60:.1f} min. \"Other work, cores\": the CPU that processes "
              f"outside the benchmark used while a side ran, in cores (0: the 2 cores were the benchmark's; 1: "
              f"another job held one of them and that side's times are inflated).", ""]
    print("\n".join(header + lines))
    args.out.write_text(json.dumps({"machine": machine, "quick": args.quick, "load_average_before": load,
                                    "host_speed": {"before": before, "after": after}, "wall_s": wall,
                                    "experiments": found}, indent=1))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
