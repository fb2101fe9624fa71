"""ReLU and Flatten, as torch.nn.ReLU and torch.nn.Flatten: the glue between layers in a stack."""

import numpy as np


def relu(x: np.ndarray) -> np.ndarray:
    """Rectified linear unit, elementwise.

    y = max(0, x)          (NaN stays NaN, as in torch.relu)

    x: any shape; returns the same shape and dtype
    """
    return np.maximum(x, 0)


def flatten(x: np.ndarray, start_dim: int, end_dim: int) -> np.ndarray:
    """Merge the dimensions start_dim..end_dim (both inclusive, already non-negative) into one.

    (d_0, ..., d_start, ..., d_end, ..., d_last) -> (d_0, ..., d_start * ... * d_end, ..., d_last)

    A 0-d input counts as one dimension and becomes shape (1,), as in torch.flatten.
    Returns a view when NumPy can (C-order reshape), like torch.
    """
    shape = x.shape or (1,)
    merged = int(np.prod(shape[start_dim:end_dim + 1]))
    return x.reshape(*shape[:start_dim], merged, *shape[end_dim + 1:])
