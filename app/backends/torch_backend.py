"""The torch backend: build the real `torch.nn` module from the config, load the state, call it.

PyTorch is the oracle, so this backend runs PyTorch's own module code (padding modes, "same"
padding, running statistics, unbatched inputs) rather than re-assembling functional calls.
"""

import inspect
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
import torch
from pydantic import BaseModel
from torch import nn

from app.backends.base import ForwardPass, ForwardResult, GradientResult, State
from app.layers.base import LayerSpec

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# torch.manual_seed seeds a process-wide generator and nn.init draws from it; requests compute
# in threads, so seeding and building must not interleave.
_GLOBAL_RNG_LOCK = threading.Lock()


# Inputs decoded from a msgpack body are views of its (read-only) bytes; torch warns about those
# once, but this backend never writes to an input. A filter set once: catch_warnings() around
# every call cost ~5 us and invalidates Python's warning caches.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


def as_tensor(array: np.ndarray, copy: bool = False) -> torch.Tensor:
    """A view of an array (read-only ones too: torch never writes to an input or a weight), or a
    copy for what the layer updates in place (BatchNorm's running statistics)."""
    return torch.from_numpy(
        np.array(array, order="C", copy=copy or None)
    )  # not ascontiguousarray: it makes 0-d arrays 1-d


def config_key(config: BaseModel) -> bytes:
    """A config's values as a hashable key (pydantic's repr costs ~10 us; this ~1 us). Configs hold
    JSON values only, and 1 and 1.0 stay apart as they do in repr."""
    return orjson.dumps(config.__dict__)


def _batch_norm_kwargs(config: BaseModel) -> dict[str, Any]:
    """The constructor's arguments; `bias` only when false, as torch < 2.13 has no such argument."""
    kwargs = config.model_dump()
    if kwargs["bias"]:
        del kwargs["bias"]
    return kwargs


def _relu_kwargs(config: BaseModel) -> dict[str, Any]:
    # In place, torch would write into the zero-copy view of the request's input, which the
    # other backend (compare) still reads; the output is the same either way.
    return {"inplace": False}


CONSTRUCTOR_KWARGS: dict[str, Callable[[BaseModel], dict[str, Any]]] = {
    "relu": _relu_kwargs,
    **{f"batchnorm{d}d": _batch_norm_kwargs for d in (1, 2, 3)},
}
"""Kinds whose torch.nn constructor takes other than the config's fields as they are."""


def _batch_norm_statistics(module: Any, x: torch.Tensor, training: bool) -> dict[str, torch.Tensor]:
    """The per-channel mean and biased variance the module normalized with (after its forward),
    as tensors on the module's device."""
    if (training or module.running_mean is None) and x.numel() == 0:
        # batch_norm_update_stats refuses an empty input; the mean of no values is NaN.
        nan = torch.full((x.shape[1],), float("nan"), dtype=x.dtype, device=x.device)
        return {"mean": nan, "var": nan.clone()}
    if training or module.running_mean is None:
        # The batch statistics of BatchNorm's own CPU kernel (the same template its forward runs),
        # without updating anything; 2-3x faster here than torch.var_mean's Welford reduction.
        mean, var = torch.batch_norm_update_stats(x, None, None, 0.0)
        return {"mean": mean, "var": var}
    return {"mean": module.running_mean, "var": module.running_var}


FUNCTIONAL: dict[str, Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]] = {
    "linear": lambda x, state: nn.functional.linear(x, state["weight"], state.get("bias")),
}
"""Kinds whose module's forward is exactly one functional call on its state, in training and eval
alike (`nn.Linear.forward` is `F.linear(input, self.weight, self.bias)`): the same kernel on the
same tensors, without loading a module and unloading it (~8 us of a small request's ~15 us)."""


def _linear_into(x: torch.Tensor, state: dict[str, torch.Tensor], out: torch.Tensor) -> bool:
    """`F.linear` of a 2-D input, which is `addmm(bias, x, weight.t())` (`mm` without bias), as torch's
    out= variant: the same kernel, writing into `out`. Other ranks: False (computed, then copied)."""
    if x.dim() != 2:
        return False
    weight, bias = state["weight"], state.get("bias")
    if bias is None:
        torch.mm(x, weight.t(), out=out)
    else:
        torch.addmm(bias, x, weight.t(), out=out)
    return True


def _relu_into(x: torch.Tensor, state: dict[str, torch.Tensor], out: torch.Tensor) -> bool:
    """`torch.relu` is `clamp_min(x, 0)` (aten's Activation.cpp): its out= variant writes into `out`."""
    torch.clamp_min(x, 0, out=out)
    return True


INTO: dict[str, Callable[[torch.Tensor, dict[str, torch.Tensor], torch.Tensor], bool]] = {
    "linear": _linear_into,
    "relu": _relu_into,
}
"""Kinds whose forward pass torch can write into a given tensor with the same kernel: an output asked
for in a client's shared-memory region is then written there once, not computed and copied. Each
returns False where it cannot (the output is then computed and copied)."""


EXTRAS: dict[str, Callable[[Any, torch.Tensor, bool], dict[str, torch.Tensor]]] = {
    f"batchnorm{d}d": _batch_norm_statistics for d in (1, 2, 3)
}
"""Tensors a kind returns beside its output (BatchNorm's `statistics`), as the reference does."""


def build_module(spec: LayerSpec, config: Any, **factory: Any) -> nn.Module:
    module_class = getattr(nn, spec.torch_name)
    # Modules without tensors (ReLU, Flatten, MaxPool2d) take no device/dtype: nothing to allocate.
    if "device" not in inspect.signature(module_class.__init__).parameters:
        factory = {}
    kwargs = CONSTRUCTOR_KWARGS.get(spec.kind, BaseModel.model_dump)(config)
    return module_class(**kwargs, **factory)


def initial_states(layers: Sequence[tuple[LayerSpec, Any]], seed: int) -> list[State]:
    """`torch.manual_seed(seed)` then build each module in order, as `nn.Sequential(...)` would.

    The result depends only on the configs and the seed, so small ones are remembered (read-only
    arrays): building and initializing a module costs far more than a small layer's forward pass.
    """
    key = (tuple((spec.kind, config_key(config)) for spec, config in layers), seed)
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


class ReusableModule:
    """A module built on the meta device (it holds no data) that adopts a request's tensors for one
    call, then gets its meta tensors back so that it keeps nothing alive.

    Loading is load_state_dict(strict=True, assign=True) without its generic machinery (hooks,
    prefixes, submodule lookups): the registries are found once, when the module is built;
    Module.__setattr__ would cost ~10 us a tensor, more than a small layer's forward pass. Plain
    tensors go into the parameter registry: the forward pass reads them the same way, and a
    Parameter wrapper (~3 us) only matters to training code, which this is not.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.meta = dict(module.state_dict(keep_vars=True))
        # (state_dict name, the module's registry it lives in, its key there, is it a parameter)
        self._slots: list[tuple[str, dict[str, Any], str, bool]] = []
        for name, tensor in self.meta.items():
            owner, _, leaf = name.rpartition(".")
            target = module.get_submodule(owner) if owner else module
            is_parameter = isinstance(tensor, nn.Parameter)
            self._slots.append((name, target._parameters if is_parameter else target._buffers, leaf, is_parameter))
        self.buffer_names = frozenset(name for name, *_, is_parameter in self._slots if not is_parameter)

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors.keys() != self.meta.keys():
            raise RuntimeError(
                f"state {sorted(tensors)} does not match {type(self.module).__name__}'s {sorted(self.meta)}"
            )
        for name, registry, leaf, _ in self._slots:
            registry[leaf] = tensors[name]

    def unload(self) -> None:
        self.load(self.meta)

    def buffers(self) -> dict[str, torch.Tensor]:
        """The loaded buffers by state_dict name (BatchNorm's, updated in place by the pass)."""
        return {name: registry[leaf] for name, registry, leaf, is_parameter in self._slots if not is_parameter}

    def train(self, training: bool) -> None:
        if self.module.training != training:  # Module.train walks every submodule
            self.module.train(training)


def reusable_module(spec: LayerSpec, config: Any) -> ReusableModule:
    """The module for `config`, built once per thread on the meta device.

    Building is the dear part of a small request (PyTorch runs the initializers even on meta:
    ~230 us for a Linear(4, 1), against ~20 us for its forward pass). A thread reuses its own
    modules, so no two requests share one at a time.
    """
    cache = getattr(_thread_modules, "cache", None)
    if cache is None:
        cache = _thread_modules.cache = OrderedDict()
    key = (spec.kind, config_key(config))
    if (entry := cache.get(key)) is not None:
        cache.move_to_end(key)
        return entry
    entry = cache[key] = ReusableModule(build_module(spec, config, device="meta"))
    if len(cache) > _MODULES_PER_THREAD:
        cache.popitem(last=False)
    return entry


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
    if tensor.device.type == "cpu" and not tensor.requires_grad:
        return tensor.numpy()  # a view; detach() and cpu() would each make a new tensor object
    return tensor.detach().cpu().numpy()


def draw_random(distribution: str, shape: tuple[int, ...], seed: int, dtype: str) -> np.ndarray:
    """Exactly `torch.manual_seed(seed); torch.randn(*shape)` (or torch.rand), without global state."""
    generator = torch.Generator().manual_seed(seed)
    draw = torch.randn if distribution == "normal" else torch.rand
    return draw(shape, generator=generator, dtype=TORCH_DTYPES[dtype]).numpy()


class TorchBackend:
    name = "torch"

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.on_cpu = self.device.type == "cpu"

    def _on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.on_cpu else tensor.to(self.device)

    def forward(
        self, spec: LayerSpec, config: Any, x: np.ndarray, state: State, training: bool, out: np.ndarray | None = None
    ) -> ForwardResult:
        if out is not None and self.on_cpu and (into := INTO.get(spec.kind)) is not None:
            tensors = {k: as_tensor(v) for k, v in state.items()}
            if into(as_tensor(x), tensors, torch.from_numpy(out)):
                return ForwardResult(output=out, buffers={}, extras={})
        if (functional := FUNCTIONAL.get(spec.kind)) is not None:
            tensors = {k: self._on_device(as_tensor(v)) for k, v in state.items()}
            output = functional(self._on_device(as_tensor(x)), tensors)
            return ForwardResult(output=self._result(output, out), buffers={}, extras={})
        reusable = reusable_module(spec, config)
        module = reusable.module
        reusable.load({k: self._on_device(as_tensor(v, copy=k in reusable.buffer_names)) for k, v in state.items()})
        try:
            reusable.train(training)
            inputs = self._on_device(as_tensor(x))
            # No tensor here requires grad, so autograd records nothing (no need for no_grad's ~2 us);
            # forward(), not __call__: no hooks are registered on these modules.
            returned = module.forward(inputs)
            tensors = EXTRAS[spec.kind](module, inputs, training) if spec.kind in EXTRAS else {}
            output, indices = returned if isinstance(returned, tuple) else (returned, None)
            if indices is not None:
                tensors["indices"] = indices
            extras = {k: to_numpy(v) for k, v in tensors.items()}
            buffers = {k: to_numpy(v) for k, v in reusable.buffers().items()}
        finally:
            reusable.unload()
        return ForwardResult(output=self._result(output, out), buffers=buffers, extras=extras)

    @staticmethod
    def _result(output: torch.Tensor, out: np.ndarray | None) -> np.ndarray:
        """The output as an array, or copied into `out` (torch's copy: parallel, and from any device)."""
        if out is None:
            return to_numpy(output)
        torch.from_numpy(out).copy_(output)
        return out

    def backward(self, forward: ForwardPass, grad_output: np.ndarray) -> GradientResult:
        """Autograd: the forward pass again with the input and parameters requiring grad (buffers on
        copies, so running statistics move once, in `forward`), then `output.backward(grad_output)`."""
        reusable = reusable_module(forward.spec, forward.config)
        module = reusable.module
        leaves: dict[str, torch.Tensor] = {}
        tensors: dict[str, torch.Tensor] = {}
        for name, value in forward.state.items():
            if name in reusable.buffer_names:
                tensors[name] = self._on_device(as_tensor(value, copy=True))
            else:
                tensors[name] = leaves[name] = self._on_device(as_tensor(value, copy=True)).requires_grad_(True)
        reusable.load(tensors)
        try:
            reusable.train(forward.training)
            inputs = self._on_device(as_tensor(forward.x, copy=True)).requires_grad_(True)
            with torch.enable_grad():
                out = module(inputs)
                output = out[0] if isinstance(out, tuple) else out
                output.backward(self._on_device(as_tensor(grad_output, copy=True)))
            grad_fn = type(output.grad_fn).__name__ if output.grad_fn is not None else None
            zeros = torch.zeros_like
            parameters = {k: to_numpy(v.grad if v.grad is not None else zeros(v)) for k, v in leaves.items()}
            grad_input = to_numpy(inputs.grad if inputs.grad is not None else zeros(inputs))
        finally:
            reusable.unload()
        return GradientResult(grad_input, parameters, grad_fn)

    def loss(
        self, function: str, output: np.ndarray, target: np.ndarray | None, reduction: str
    ) -> tuple[float, np.ndarray]:
        """torch.nn.functional's loss of the output and its gradient dL/d(output) (autograd)."""
        out = self._on_device(as_tensor(output, copy=True)).requires_grad_(True)
        with torch.enable_grad():
            if function == "sum":
                value = out.sum() if reduction == "sum" else out.mean()
            else:
                assert target is not None
                t = self._on_device(as_tensor(target))
                loss_function = (
                    torch.nn.functional.mse_loss if function == "mse_loss" else torch.nn.functional.cross_entropy
                )
                value = loss_function(out, t, reduction=reduction)
            value.backward()
        assert out.grad is not None
        return float(value.item()), to_numpy(out.grad)
