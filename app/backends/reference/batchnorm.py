"""Batch normalization, as torch.nn.BatchNorm1d/2d/3d in training and evaluation mode."""

import numpy as np


def batch_norm(
    x: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    num_batches_tracked: np.ndarray | None,
    *,
    training: bool,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per-channel normalization with statistics over (N, *spatial).

    y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias

    computed as y = x * scale + shift, scale = weight / sqrt(Var[x] + eps), shift = bias - E[x] * scale.
    E[x] and Var[x] are the batch's mean and BIASED variance (divide by count = N * prod(spatial))
    in training mode, and in evaluation mode when no running statistics are tracked; evaluation mode
    with running statistics uses running_mean and running_var instead (PyTorch's `bn_training`).
    Training with running statistics then updates them (num_batches_tracked += 1 first):

        factor = momentum, or 1 / num_batches_tracked when momentum is None (cumulative average)
        running_mean = (1 - factor) * running_mean + factor * E[x]
        running_var  = (1 - factor) * running_var  + factor * Var[x] * count / (count - 1)   (UNBIASED)

    x: (N, C) or (N, C, *spatial); weight, bias: (C,) or None (affine=False: 1 and 0);
    running_mean, running_var: (C,) or None (not tracked); num_batches_tracked: () int64 or None
    returns (y like x, mean (C,), var (C,) the biased statistics that normalized, buffers): buffers are
    running_mean, running_var, num_batches_tracked after the pass ({} when not tracked).
    """
    N, C = x.shape[:2]
    xr = x.reshape(N, C, -1)  # (N, C, L), L = prod(spatial), 1 for (N, C)
    tracked = running_mean is not None
    buffers = {"running_mean": running_mean, "running_var": running_var,
               "num_batches_tracked": num_batches_tracked} if tracked else {}
    if training or not tracked:
        count = xr.shape[0] * xr.shape[2]
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(x.shape)}")
        # Sums in float64 over N, of pairwise (accurate) sums along the contiguous L. The variance
        # is taken around the mean rounded to x's dtype (no cancellation, no float64 copy of x);
        # Var[x] = E[(x - m)^2] - (E[x] - m)^2 holds for any m.
        mean = xr.sum(axis=2).sum(axis=0, dtype=np.float64) / count  # (C,)
        pivot = mean.astype(x.dtype)
        centered = np.subtract(xr, pivot[:, None])
        squares = np.square(centered, out=centered).sum(axis=2).sum(axis=0, dtype=np.float64)
        var = squares / count - (mean - pivot) ** 2  # (C,), biased
        if training and tracked:
            tracked_batches = num_batches_tracked + 1
            factor = 1.0 / tracked_batches if momentum is None else momentum
            buffers = {
                "running_mean": ((1 - factor) * running_mean + factor * mean).astype(running_mean.dtype),
                "running_var": ((1 - factor) * running_var + factor * var * count / (count - 1)).astype(running_var.dtype),
                "num_batches_tracked": np.asarray(tracked_batches, dtype=np.int64),
            }
    else:
        centered = None
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    scale = 1.0 / np.sqrt(var + eps) if weight is None else weight / np.sqrt(var + eps)  # (C,)
    shift = -mean * scale if bias is None else bias - mean * scale
    # One multiply and one add per element, in x's dtype, written into the spare buffer.
    y = np.multiply(xr, scale.astype(x.dtype)[:, None], out=centered)
    y += shift.astype(x.dtype)[:, None]
    return y.reshape(x.shape), mean.astype(x.dtype), var.astype(x.dtype), buffers
