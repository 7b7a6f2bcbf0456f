"""What a run ran on: hardware and library versions, recorded in run.json and shown in the report."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU model as the OS names it (e.g. 'AMD EPYC 9R45'), or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def hardware() -> dict[str, object]:
    """CPU, core count and GPUs of this machine."""
    found: dict[str, object] = {"cpu": cpu_name(), "cpu_cores": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        found["gpus"] = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    return found


def versions() -> dict:
    """Versions of Python and the libraries a result depends on."""
    found = {"python": platform.python_version()}
    for package in ("imgcls", "torch", "torchvision", "timm", "accelerate", "torchmetrics"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
