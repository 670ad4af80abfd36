"""Process-wide runtime helpers: seeding, device selection, the offline switch, intra-op threads, the optimiser
of every stage, the CPU memory allocator, and the process share under torchrun / srun."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from d4c.errors import D4CError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
OFFLINE_ENV = "D4C_OFFLINE"


def offline() -> bool:
    """True when ``D4C_OFFLINE`` is set: no model or dataset download is attempted."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0", "false", "False")


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device called ``name``: ``auto`` picks CUDA when available, else the CPU."""
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise D4CError(f"must be one of {', '.join(DEVICE_CHOICES)} or cuda:N, got {name!r}.", "device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise D4CError(f"{name} was requested but no CUDA device is available on this machine.", "device")
    return torch.device(name)


def adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the fused kernel where this torch has one for the parameters' device.

    Same update as the default implementation up to float rounding; on a 2-core CPU the fused step
    over 32 pseudo images at 224 px takes 4.7 ms instead of 28.5 ms. Older torch builds (no fused
    CPU kernel before 2.4) get the default implementation.
    """
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, restoring the previous count afterwards.

    For long chains of small tensor operations (the MSE range searches): with several intra-op
    threads on a shared CPU every operation waits at a barrier for a descheduled thread.
    """
    previous = torch.get_num_threads()
    if previous != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if previous != count:
            torch.set_num_threads(previous)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
ALLOCATOR_KEEP_BYTES = 2**30
"""Freed memory below this size stays with the process for reuse (see :func:`tune_cpu_allocator`)."""
_allocator_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep freed memory for reuse instead of returning it to the operating system (glibc on Linux).

    PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above a threshold (128 KiB,
    adapting up to 32 MiB) with fresh ``mmap`` calls and trims the heap's free top, so every large
    temporary of a step — the activations, gradients and fake-quantized copies of a reconstruction
    or generation step — is zero-filled page by page by the kernel again. Raising both thresholds to
    1 GiB makes those blocks reusable: the 2-core CPU's ResNet Bottleneck reconstruction step drops
    from about 1.2 s to 0.45 s (minor page faults 4.0 M -> 0.5 M, ``benchmarks/bench_allocator.py``),
    at the price of a peak resident size held until exit (about 15 % higher there). Numbers are
    unchanged: only where memory comes from changes. No-op (False) off glibc or with
    ``D4C_MALLOC_TUNING=0``; called once by the command line and the benchmarks.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get("D4C_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _allocator_tuned = bool(mallopt(M_TRIM_THRESHOLD, ALLOCATOR_KEEP_BYTES)
                            and mallopt(M_MMAP_THRESHOLD, ALLOCATOR_KEEP_BYTES))
    return _allocator_tuned


@dataclass(frozen=True)
class ProcessShare:
    """This process's place among the processes of one job: ``rank`` of ``world`` (0 of 1 when alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0


def process_share() -> ProcessShare:
    """The share torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) or srun (``SLURM_PROCID``,
    ``SLURM_NTASKS``, ``SLURM_LOCALID``) gave this process; 0 of 1 otherwise."""
    for rank, world, local in (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
        if rank in os.environ and world in os.environ:
            share = ProcessShare(int(os.environ[rank]), int(os.environ[world]), int(os.environ.get(local, 0)))
            if not 0 <= share.rank < share.world:
                raise D4CError(f"{rank}={share.rank} is not below {world}={share.world}.")
            return share
    return ProcessShare()


def share_device(name: str, share: ProcessShare) -> str:
    """``auto`` on a CUDA machine under torchrun / srun: the process's own GPU (``cuda:LOCAL_RANK``)."""
    if name == "auto" and share.world > 1 and torch.cuda.is_available():
        return f"cuda:{share.local_rank % torch.cuda.device_count()}"
    return name
