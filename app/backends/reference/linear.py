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
