"""The BatchNorm specs' bookkeeping against torch and torchinfo: tensors, shapes and multiply-adds."""

import pytest
import torch
import torchinfo

from app.layers.batchnorm import BatchNormConfig
from app.layers.registry import LAYERS

CASES = [("batchnorm1d", (8, 5)), ("batchnorm1d", (4, 5, 7)), ("batchnorm2d", (3, 5, 6, 4)), ("batchnorm3d", (2, 5, 3, 4, 2))]


@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("kind,shape", CASES)
def test_tensors_shapes_and_macs_match_torch_and_torchinfo(kind, shape, affine, track_running_stats):
    spec = LAYERS[kind]
    config = BatchNormConfig(num_features=5, affine=affine, track_running_stats=track_running_stats)
    module = getattr(torch.nn, spec.torch_name)(5, affine=affine, track_running_stats=track_running_stats)
    state = module.state_dict()
    assert {**spec.parameter_shapes(config), **spec.buffer_shapes(config)} == {k: tuple(v.shape) for k, v in state.items()}
    assert set(spec.parameter_shapes(config)) == {name for name, _ in module.named_parameters()}
    assert spec.output_shape(config, shape) == shape
    stats = torchinfo.summary(module, input_size=shape, verbose=0, device="cpu")
    assert spec.macs(config, shape, shape) == stats.total_mult_adds
    assert spec.estimated_work(config, shape, shape) >= torch.Size(shape).numel()
