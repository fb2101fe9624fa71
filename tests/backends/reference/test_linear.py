"""The reference Linear against torch.nn.Linear on random shapes."""

import numpy as np
import pytest
import torch

from app.backends.reference.linear import linear


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(), (7,), (3, 5), (2, 3, 4)])
def test_linear_matches_torch(lead, bias, dtype):
    gen = torch.Generator().manual_seed(len(lead) * 10 + bias)
    in_features, out_features = 6, 3
    module = torch.nn.Linear(in_features, out_features, bias=bias, dtype=dtype)
    x = torch.randn(*lead, in_features, generator=gen, dtype=dtype)
    expected = module(x).detach()
    weight = module.weight.detach().numpy()
    b = module.bias.detach().numpy() if bias else None
    mine = linear(x.numpy(), weight, b)
    assert mine.dtype == x.numpy().dtype
    torch.testing.assert_close(torch.from_numpy(np.asarray(mine)), expected, msg=lambda m: f"mine vs torch: {m}")
