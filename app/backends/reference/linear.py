"""Linear, as torch.nn.functional.linear."""

import numpy as np


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Fully connected layer.

    outputs = inputs x weight^T + bias

    x: (*, in_features); weight: (out_features, in_features); bias: (out_features,) or None
    returns (*, out_features)
    """
    y = x @ weight.T
    return y if bias is None else y + bias


def linear_backward(
    x: np.ndarray, weight: np.ndarray, grad_output: np.ndarray, bias: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of `linear` given the upstream gradient dY = dL/dY.

    dX = dY W          dW = dYᵀ X (summed over every leading dimension)          db = Σ dY (same sum)

    x: (*, in_features); weight: (out_features, in_features); grad_output: (*, out_features)
    returns (dX like x, dW like weight, db (out_features,) or None when there is no bias)
    """
    rows = grad_output.reshape(-1, weight.shape[0])  # (prod(*), out_features)
    grad_weight = rows.T @ x.reshape(-1, weight.shape[1])  # (out_features, in_features); zeros for an empty batch
    grad_bias = rows.sum(axis=0) if bias else None
    return grad_output @ weight, grad_weight, grad_bias
