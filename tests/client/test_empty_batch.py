"""The SDK carries empty arrays (a batch of 0) both ways, in each of its codecs, as torch computes them."""

import numpy as np
import pytest
import torch

from app.client import random_tensor
from app.client.codec import JsonCodec, MsgpackCodec

CODECS = {"msgpack": MsgpackCodec(), "json-base64": JsonCodec(), "json-lists": JsonCodec(tensors="list")}


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_arrays_round_trip_in_every_codec(in_process, app, codec, dtype):
    client = in_process(app, codec=codec)
    result = client.conv2d(np.empty((0, 2, 5, 5), dtype), in_channels=2, out_channels=3, kernel_size=3, compare=True)
    assert result.output.shape == result.output_shape == (0, 3, 3, 3) and result.output.dtype == dtype
    assert result.comparison.allclose
    nested = client.linear(np.empty((2, 0, 4), dtype), in_features=4, out_features=1)  # [[], []] as lists
    assert nested.output.shape == (2, 0, 1) and nested.output.dtype == dtype


def test_empty_batch_equals_torch_through_the_sdk(sdk):
    """BatchNorm in training on empty batches: the buffers fed back count them, statistics untouched."""
    module = torch.nn.BatchNorm1d(3)
    buffers: dict = {}
    for _ in range(2):
        result = sdk.batchnorm1d(np.empty((0, 3, 4), np.float32), num_features=3, parameters=buffers, compare=True)
        buffers = result.buffers
        with torch.no_grad():
            expected = module(torch.empty(0, 3, 4))
        assert result.output.shape == tuple(expected.shape)
    for name, buffer in module.named_buffers():
        np.testing.assert_array_equal(np.asarray(buffers[name]), buffer.numpy())
    assert int(buffers["num_batches_tracked"]) == 2


def test_server_drawn_empty_input_and_indices(sdk):
    result = sdk.maxpool1d(random_tensor((0, 2, 6)), kernel_size=2, return_indices=True)
    assert result.output.shape == result.indices.shape == (0, 2, 3)
    assert result.indices.dtype == np.int64
