"""The backends by name, and the two things only torch defines: seeded initialization and seeded draws.

Code outside app.backends reaches a backend through here, so torch loads only when a request
needs it (a reference-only process never imports it). Parameters a request does not give are
what `torch.manual_seed(seed)` and building the modules make, and a `random` input is what
`torch.manual_seed(seed); torch.randn(*shape)` draws, whichever backend then computes.
"""

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.backends.base import Backend, State
from app.backends.reference_backend import ReferenceBackend
from app.layers.base import LayerSpec

BACKENDS = ("torch", "reference")


@functools.lru_cache(maxsize=16)  # backends hold nothing but their device
def get_backend(name: str, device: str = "cpu") -> Backend:
    """`device` is where torch computes; the reference backend is NumPy on the CPU."""
    if name == "reference":
        return ReferenceBackend()
    from app.backends.torch_backend import TorchBackend

    return TorchBackend(device)


def other_backend(name: str) -> str:
    return "reference" if name == "torch" else "torch"


def available_devices() -> list[str]:
    """Devices a request may name: "cpu", and "cuda" / "cuda:N" when torch sees GPUs."""
    from app.backends import torch_backend

    return torch_backend.available_devices()


def initial_states(layers: Sequence[tuple[LayerSpec, Any]], seed: int) -> list[State]:
    """Each layer's tensors as `torch.manual_seed(seed)` and then `nn.Sequential(*layers)` make them."""
    from app.backends import torch_backend

    return torch_backend.initial_states(layers, seed)


def draw_random(distribution: str, shape: tuple[int, ...], seed: int, dtype: str) -> np.ndarray:
    """Exactly `torch.manual_seed(seed); torch.randn(*shape)` (or torch.rand) in `dtype`."""
    from app.backends import torch_backend

    return torch_backend.draw_random(distribution, shape, seed, dtype)
