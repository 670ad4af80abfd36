"""What a figure was measured on: one environment record for result files, benchmarks and scripts.

:func:`environment` describes the device and the machine (kind, name, torch threads, CPU count,
platform, torch and python versions; on CUDA the CUDA version, TF32 and peak memory);
:func:`package_versions` lists the packages a result depends on.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import torch

from d4c import __version__

PACKAGES = ("torch", "torchvision", "clip-anytorch", "clip-benchmark", "numpy", "scipy", "scikit-learn",
            "pyyaml", "easydict", "tqdm")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when one is missing)."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "d4c": __version__}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | str) -> dict[str, Any]:
    """The device and machine a measurement ran on."""
    device = torch.device(device)
    info: dict[str, Any] = {"type": device.type, "name": cpu_name(), "torch": torch.__version__,
                            "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
                            "cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info.update(name=torch.cuda.get_device_name(index), cuda=torch.version.cuda,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    max_memory_allocated_mb=round(torch.cuda.max_memory_allocated(index) / 2**20, 1))
    return info
