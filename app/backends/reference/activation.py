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
    merged = int(np.prod(shape[start_dim : end_dim + 1]))
    return x.reshape(*shape[:start_dim], merged, *shape[end_dim + 1 :])


def relu_backward(x: np.ndarray, grad_output: np.ndarray) -> np.ndarray:
    """Gradient of `relu`: dX = dY where x > 0, else 0.

    0 at x = 0 (torch's choice of subgradient); a NaN input passes dY through, as torch's
    threshold_backward tests `x <= 0` for the zero.

    x, grad_output: the same shape; returns dX of that shape
    """
    return np.where(x <= 0, np.zeros((), grad_output.dtype), grad_output)


def flatten_backward(grad_output: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Gradient of `flatten`: a reshape back, dX = dY.reshape(input_shape) (a 0-d input gets its shape back)."""
    return grad_output.reshape(input_shape)
