"""Hardware probe: what devices, compilers and versions this machine offers to the backends."""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import shutil

import torch

from quatrain import Hardware


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and (found := shutil.which(name)):
            return found
    return None


@functools.cache
def detect_hardware() -> Hardware:
    """Probe the machine once per process."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if cuda:
        device, name = "cuda", torch.cuda.get_device_name(0)
        capability: tuple[int, int] | None = tuple(torch.cuda.get_device_capability(0))  # type: ignore[assignment]
    elif mps:
        device, name, capability = "mps", "Apple Metal (MPS)", None
    else:
        device, name, capability = "cpu", _cpu_name(), None
    return Hardware(
        device=device,
        device_name=name,
        cuda_available=cuda,
        cuda_capability=capability,
        mps_available=mps,
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
        compiler=_compiler(),
        triton=importlib.util.find_spec("triton") is not None,
    )
