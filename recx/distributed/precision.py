"""GPU input and compute options: pinned-memory copies and bf16 autocast, both off on CPU.

NOTE: these paths run only when torch finds a CUDA device. The machines
recx is tested on have no GPU, so these paths have not run yet, and their
tests skip there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torchrec import KeyedJaggedTensor


def use_bf16(device: torch.device, requested: bool | None) -> bool:
    """Return whether to run the towers under bf16 autocast.

    None (the default) means yes on a CUDA device that supports bf16 and no
    elsewhere. On CPU, autocast to bf16 is slower than float32 on most
    processors, so it is never used there.

    Raises
    ------
    ValueError
        If bf16 is requested on a device without it.
    """
    available = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if requested and not available:
        raise ValueError(f"bf16 autocast was requested, but device {device} does not support it: recx uses bf16 only on CUDA devices with bf16. Train without it.")
    return available if requested is None else bool(requested)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """Run the block under bf16 autocast on ``device`` when ``enabled``.

    Matrix products and MLP layers then run in bf16; embedding lookups and
    the loss stay in float32 (callers cast the tower outputs with ``.float()``).
    """
    if not enabled:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


def to_device(features: KeyedJaggedTensor, device: torch.device) -> KeyedJaggedTensor:
    """Move a batch to ``device``; for CUDA, through pinned memory so the copy overlaps compute."""
    if device.type != "cuda":
        return features if features.values().device == device else features.to(device)
    return features.pin_memory().to(device, non_blocking=True)
