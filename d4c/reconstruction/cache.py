"""Caching what flows into and out of a module, chunk by chunk, without gradients.

Cached tensors are batch-first (the module's batch axis moved to dimension 0), so sampling rows
is indexing dimension 0 whatever the module's layout. A run stops as soon as the hooked module
has been reached, so the layers after it cost nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

DEFAULT_CHUNK = 32
"""Samples per forward while caching (bounds activation memory)."""


class _Reached(Exception):
    """Raised by a hook to end the forward pass once the module's tensors are captured."""


def _chunks(data: torch.Tensor, chunk: int, device: torch.device) -> list[torch.Tensor]:
    return [data[start:start + chunk].to(device, non_blocking=True) for start in range(0, data.shape[0], chunk)]


def _run_hooked(run: Callable[[torch.Tensor], Any], data: torch.Tensor, handle: Any, device: torch.device,
                chunk: int) -> None:
    """``run`` on every chunk of ``data`` until the hook behind ``handle`` ends it; then remove the hook."""
    try:
        for batch in _chunks(data, chunk, device):
            try:
                run(batch)
            except _Reached:
                pass
    finally:
        handle.remove()


@torch.no_grad()
def capture_inputs(run: Callable[[torch.Tensor], Any], data: torch.Tensor, module: nn.Module, batch_axis: int,
                   device: torch.device, store: torch.device, chunk: int = DEFAULT_CHUNK
                   ) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """The positional tensor inputs of ``module`` (batch-first, on ``store``) while ``run`` processes ``data``.

    ``data`` is batch-first; each chunk is moved to ``device`` and given to ``run``. Keyword
    arguments of the call (e.g. an attention mask) are returned as seen in the first chunk.
    """
    parts: list[list[torch.Tensor]] = []
    kwargs_seen: dict[str, Any] = {}

    def hook(_module, args, kwargs):
        parts.append([a.movedim(batch_axis, 0).to(store) for a in args])
        if not kwargs_seen:
            kwargs_seen.update(kwargs)
        raise _Reached

    _run_hooked(run, data, module.register_forward_pre_hook(hook, with_kwargs=True), device, chunk)
    if not parts:
        raise RuntimeError("the module was never called")
    return [torch.cat(tensors) for tensors in zip(*parts)], kwargs_seen


@torch.no_grad()
def capture_output(run: Callable[[torch.Tensor], Any], data: torch.Tensor, module: nn.Module, batch_axis: int,
                   device: torch.device, store: torch.device, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """The output of ``module`` (batch-first, on ``store``) while ``run`` processes ``data``."""
    parts: list[torch.Tensor] = []

    def hook(_module, _args, output):
        parts.append(output.movedim(batch_axis, 0).to(store))
        raise _Reached

    _run_hooked(run, data, module.register_forward_hook(hook), device, chunk)
    if not parts:
        raise RuntimeError("the module was never called")
    return torch.cat(parts)


@torch.no_grad()
def apply_chunked(fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor, device: torch.device,
                  store: torch.device, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``fn`` applied to ``data`` chunk by chunk (batch-first in and out), results on ``store``."""
    return torch.cat([fn(batch).to(store) for batch in _chunks(data, chunk, device)])
