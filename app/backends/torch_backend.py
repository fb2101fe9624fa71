"""The torch backend: build the real `torch.nn` module from the config, load the state, call it.

PyTorch is the oracle, so this backend runs PyTorch's own module code (padding modes, "same"
padding, running statistics, unbatched inputs) rather than re-assembling functional calls.
"""

import inspect
import threading
import warnings
from collections import OrderedDict
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
    module_class = getattr(nn, spec.torch_name)
    # Modules without tensors (ReLU, Flatten, MaxPool2d) take no device/dtype: nothing to allocate.
    if "device" not in inspect.signature(module_class.__init__).parameters:
        factory = {}
    return module_class(**spec.torch_kwargs(config), **factory)


def initial_states(layers: Sequence[tuple["LayerSpec", Any]], seed: int) -> list[State]:
    """`torch.manual_seed(seed)` then build each module in order, as `nn.Sequential(...)` would.

    The result depends only on the configs and the seed, so small ones are remembered (read-only
    arrays): building and initializing a module costs far more than a small layer's forward pass.
    """
    key = (tuple((spec.kind, repr(config)) for spec, config in layers), seed)
    with _INITIAL_STATES_LOCK:
        if (states := _initial_states.get(key)) is not None:
            _initial_states.move_to_end(key)
            return states
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = [build_module(spec, config) for spec, config in layers]
    states = [{k: v.detach().numpy().copy() for k, v in m.state_dict().items()} for m in modules]
    size = sum(a.size for state in states for a in state.values())
    if size <= _INITIAL_STATES_ELEMENTS // 16:
        for state in states:
            for array in state.values():
                array.flags.writeable = False
        with _INITIAL_STATES_LOCK:
            _initial_states[key] = states
            global _initial_states_size
            _initial_states_size += size
            while _initial_states_size > _INITIAL_STATES_ELEMENTS:
                _, dropped = _initial_states.popitem(last=False)
                _initial_states_size -= sum(a.size for state in dropped for a in state.values())
    return states


_INITIAL_STATES_ELEMENTS = 2**22
"""Elements of remembered initial states in all (16 MiB of float32); one entry at most 1/16 of it."""
_initial_states: OrderedDict[Any, list[State]] = OrderedDict()
_initial_states_size = 0
_INITIAL_STATES_LOCK = threading.Lock()


_MODULES_PER_THREAD = 32
_thread_modules = threading.local()


def reusable_module(spec: "LayerSpec", config: Any) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The module for `config`, built once per thread on the meta device, with its meta tensors.

    Building is the dear part of a small request (PyTorch runs the initializers even on meta:
    ~230 us for a Linear(4, 1), against ~20 us for its forward pass). A thread reuses its own
    modules, so no two requests share one at a time.
    """
    cache = getattr(_thread_modules, "cache", None)
    if cache is None:
        cache = _thread_modules.cache = OrderedDict()
    key = (spec.kind, repr(config))
    if (entry := cache.get(key)) is not None:
        cache.move_to_end(key)
        return entry
    module = build_module(spec, config, device="meta")
    entry = cache[key] = (module, dict(module.state_dict(keep_vars=True)))
    if len(cache) > _MODULES_PER_THREAD:
        cache.popitem(last=False)
    return entry


def assign_state(module: nn.Module, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """load_state_dict(strict=True, assign=True) without its generic machinery (hooks, prefixes)."""
    if tensors.keys() != expected.keys():
        raise RuntimeError(f"state {sorted(tensors)} does not match {type(module).__name__}'s {sorted(expected)}")
    for name, tensor in tensors.items():
        owner, _, leaf = name.rpartition(".")
        target = module.get_submodule(owner) if owner else module
        # The registries themselves: Module.__setattr__ costs ~10 us a tensor, more than a small forward.
        if isinstance(expected[name], nn.Parameter):
            target._parameters[leaf] = tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad=False)
        else:
            target._buffers[leaf] = tensor


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
        # A meta-device module (it holds no data) adopts our tensors for this call, then gets its
        # meta tensors back so that it keeps nothing alive. Copied: BatchNorm updates its buffers in place.
        module, meta = reusable_module(spec, config)
        assign_state(module, {k: torch.from_numpy(np.array(v)).to(self.device) for k, v in state.items()}, meta)
        try:
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
        finally:
            assign_state(module, meta, meta)
        return ForwardResult(output=to_numpy(output), buffers=buffers, extras=extras)
