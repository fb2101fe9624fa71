"""The torch backend: build the real `torch.nn` module from the config, load the state, call it.

PyTorch is the oracle, so this backend runs PyTorch's own module code (padding modes, "same"
padding, running statistics, unbatched inputs) rather than re-assembling functional calls.
"""

import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from app.backends.base import ForwardResult, State

if TYPE_CHECKING:
    from app.layers.base import LayerSpec

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# torch.manual_seed seeds a process-wide generator and nn.init draws from it; requests compute
# in threads, so seeding and building must not interleave.
_GLOBAL_RNG_LOCK = threading.Lock()


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """Zero-copy view of an array (read-only buffers too: torch never writes to an input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(array))


def build_module(spec: "LayerSpec", config: Any, **factory: Any) -> nn.Module:
    return getattr(nn, spec.torch_name)(**spec.torch_kwargs(config), **factory)


def initial_states(layers: Sequence[tuple["LayerSpec", Any]], seed: int) -> list[State]:
    """`torch.manual_seed(seed)` then build each module in order, as `nn.Sequential(...)` would."""
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = [build_module(spec, config) for spec, config in layers]
    return [{k: v.detach().numpy().copy() for k, v in m.state_dict().items()} for m in modules]


def available_devices() -> list[str]:
    """Devices a request may name: "cpu", and "cuda" / "cuda:N" when torch sees GPUs."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ["cuda", *(f"cuda:{i}" for i in range(count))]
    return devices


def device_details() -> list[dict[str, Any]]:
    """What /v1/info says about each device."""
    details: list[dict[str, Any]] = [{"device": "cpu", "threads": torch.get_num_threads()}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            details.append({"device": f"cuda:{i}", "name": props.name, "memory_bytes": props.total_memory})
    return details


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()  # .cpu() is a no-op for CPU tensors


def draw_random(distribution: str, shape: tuple[int, ...], seed: int, dtype: str) -> np.ndarray:
    """Exactly `torch.manual_seed(seed); torch.randn(*shape)` (or torch.rand), without global state."""
    generator = torch.Generator().manual_seed(seed)
    draw = torch.randn if distribution == "normal" else torch.rand
    return draw(shape, generator=generator, dtype=TORCH_DTYPES[dtype]).numpy()


class TorchBackend:
    name = "torch"

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)

    def forward(self, spec: "LayerSpec", config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
        # Built on the meta device, the module allocates and initializes nothing; assign=True
        # then adopts our tensors (copied: BatchNorm updates its buffers in place). Stateless
        # modules (pooling) take no device argument and have nothing to allocate.
        module = build_module(spec, config, device="meta") if state else build_module(spec, config)
        module.load_state_dict({k: torch.tensor(v, device=self.device) for k, v in state.items()},
                               strict=True, assign=True)
        module.train(training)
        inputs = as_tensor(x).to(self.device)  # no copy on the CPU
        with torch.no_grad():
            out = module(inputs)
            extras = spec.torch_extras(module, inputs, training) if spec.torch_extras else {}
        output, indices = (out if isinstance(out, tuple) else (out, None))
        if indices is not None:
            extras["indices"] = indices
        extras = {k: to_numpy(v) if isinstance(v, torch.Tensor) else v for k, v in extras.items()}
        buffers = {k: to_numpy(v) for k, v in module.named_buffers()}
        return ForwardResult(output=to_numpy(output), buffers=buffers, extras=extras)
