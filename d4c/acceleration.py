"""``torch.compile`` for the hot loops: when to use it, and a clean fallback when it fails.

``--compile`` (``auto``, ``on``, ``off``) chooses whether the reconstruction step and the
generation step are compiled with inductor. Compiled kernels fuse the elementwise work around the
matrix products (fake quantization, the loss, their gradients) and round floats differently from
the eager kernels (the tolerances are in ``tests/reconstruction/test_step.py``). ``auto`` compiles
only where it was measured to pay, compile time included (``benchmarks/bench_reconstruction.py``
times eager and compiled steps and the compile seconds; README, Performance):

* reconstruction on the CPU when a unit trains for at least :data:`CPU_RECON_MIN_ITERS` steps
  (each new unit shape costs a few seconds of compilation on a 2-core CPU; short runs such as the
  demo's 100 steps per unit lose more than they gain);
* nothing on CUDA until ``benchmarks/gpu_check.sh`` has measured it there; generation nowhere
  (its steps are bound by the encoder's matrix products: compiling gained 8-17 % for D4C on the
  CPU, 36 % for BNS, for 1-2 minutes of compilation).

A compilation that fails (no C++ compiler, an unsupported operation) warns once and the loop
continues eagerly with the same numbers an eager run gives.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from d4c.errors import D4CError

COMPILE_CHOICES = ("auto", "on", "off")
CPU_RECON_MIN_ITERS = 2000
"""With ``--compile auto``, CPU reconstruction is compiled from this many steps per unit on."""
RECOMPILE_LIMIT = 64
"""Compiled variants kept per function (one per unit shape and quantizer layout)."""


def check_compile_choice(choice: str) -> str:
    """``choice`` if it is a valid ``--compile`` value; else a one-sentence error."""
    if choice not in COMPILE_CHOICES:
        raise D4CError(f"--compile must be one of {', '.join(COMPILE_CHOICES)}, got {choice!r}.")
    return choice


def compile_reconstruction(choice: str, device: torch.device, iters: int) -> bool:
    """Whether the reconstruction step is compiled under ``--compile choice``."""
    check_compile_choice(choice)
    if choice != "auto":
        return choice == "on"
    return torch.device(device).type == "cpu" and iters >= CPU_RECON_MIN_ITERS


def compile_generation(choice: str, device: torch.device) -> bool:
    """Whether the generation step is compiled under ``--compile choice`` (``auto``: never, see above)."""
    check_compile_choice(choice)
    return choice == "on"


def _raise_recompile_limits() -> None:
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name) and getattr(config, name) < RECOMPILE_LIMIT:
            setattr(config, name, RECOMPILE_LIMIT)


class Compiled:
    """``fn`` compiled with inductor on first use; after a failed compilation, ``fn`` itself.

    :meth:`run` calls the compiled function and, if compiling or running it raises, warns once,
    switches to eager for good and calls ``fn``. ``active`` says which one the last call used.
    A failure after the call (in the compiled backward) is handled by the caller with
    :meth:`fall_back`.
    """

    def __init__(self, fn: Callable[..., Any], what: str, enabled: bool = True):
        self.fn, self.what = fn, what
        self.active = enabled
        self._compiled = None
        if enabled:
            _raise_recompile_limits()
            # fallback_random: random draws inside the compiled graph come from torch's own generators,
            # as in eager mode (QDrop's torch.rand_like).
            self._compiled = torch.compile(fn, dynamic=False, options={"fallback_random": True})

    def fall_back(self, error: BaseException) -> None:
        """Stop compiling: warn (once) with ``error`` and use ``fn`` from now on."""
        if self.active:
            warnings.warn(f"torch.compile of the {self.what} failed ({type(error).__name__}: "
                          f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); continuing without "
                          f"compilation.", RuntimeWarning, stacklevel=3)
        self.active = False

    def run(self, *args: Any) -> Any:
        if self.active:
            try:
                return self._compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure means: run eagerly
                self.fall_back(error)
        return self.fn(*args)
