"""Comparing a hand-written gradient with torch.autograd's."""

import math

import numpy as np
import torch


def assert_grad_close(mine: np.ndarray | None, theirs: torch.Tensor | None, terms: int, what: str) -> None:
    """torch.testing.assert_close with its default tolerances, loosened for float32 by √terms, where
    `terms` is the most products one gradient element sums (e.g. N * H_out * W_out for a conv weight).

    Why: both sides round each partial sum to float32, in different orders (torch's blocked or
    threaded kernels, NumPy's pairwise sums and BLAS); with unit-scale random data the rounding
    errors add like a random walk, so the difference grows with √terms. float64 keeps the defaults.
    """
    if theirs is None:
        assert mine is None, f"{what}: torch has no gradient, the reference gives one"
        return
    assert mine is not None, f"{what}: torch has a gradient, the reference gives none"
    assert mine.shape == tuple(theirs.shape), f"{what}: shape {mine.shape}, torch's {tuple(theirs.shape)}"
    assert mine.dtype == theirs.numpy().dtype, f"{what}: dtype {mine.dtype}, torch's {theirs.dtype}"
    scale = math.sqrt(max(1, terms)) if theirs.dtype == torch.float32 else 1.0
    rtol, atol = (1.3e-6, 1e-5) if theirs.dtype == torch.float32 else (1e-7, 1e-7)
    torch.testing.assert_close(torch.from_numpy(mine.copy()), theirs, rtol=rtol * scale, atol=atol * scale,
                               equal_nan=True, msg=lambda text: f"{what}: mine vs torch's\n{text}")
