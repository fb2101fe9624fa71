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
        count = N * xr.shape[2]
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(x.shape)}")
        # Float64 sums over N of pairwise (accurate) sums along the contiguous L. The variance is
        # taken around the mean rounded to x's dtype, m: no cancellation and no float64 copy of x,
        # as Var[x] = E[(x - m)^2] - (E[x] - m)^2 for any m.
        mean = xr.sum(axis=2).sum(axis=0, dtype=np.float64) / count  # (C,)
        pivot = mean.astype(x.dtype)
        work = np.subtract(xr, pivot[:, None])  # (N, C, L), x - m; reused for y below
        squares = np.square(work, out=work).sum(axis=2).sum(axis=0, dtype=np.float64)
        var = squares / count - (mean - pivot) ** 2  # (C,), biased
        if training and tracked:
            batches = num_batches_tracked + 1
            factor = 1.0 / batches if momentum is None else momentum
            buffers = {
                "running_mean": ((1 - factor) * running_mean + factor * mean).astype(running_mean.dtype),
                "running_var": ((1 - factor) * running_var + factor * var * count / (count - 1)).astype(running_var.dtype),
                "num_batches_tracked": np.asarray(batches, dtype=np.int64),
            }
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
        pivot, work = running_mean.astype(x.dtype), None
    # y = (x - m) * scale + shift with scale = weight / sqrt(Var + eps), shift = bias - (E[x] - m) * scale:
    # the formula above, one subtraction, multiplication and addition per element, in place.
    scale = (1.0 if weight is None else weight) / np.sqrt(var + eps)  # (C,)
    # E[x] - m is only m's rounding error: 0 where they are equal, an infinite running mean too
    # (inf - inf would be NaN where the formula gives -inf, as torch does).
    with np.errstate(invalid="ignore"):  # inf - inf, replaced by the 0
        offset = np.where(mean == pivot, 0.0, mean - pivot)
    shift = (0.0 if bias is None else bias) - offset * scale
    y = np.subtract(xr, pivot[:, None], out=work)
    y *= scale.astype(x.dtype)[:, None]
    y += shift.astype(x.dtype)[:, None]
    return y.reshape(x.shape), mean.astype(x.dtype), var.astype(x.dtype), buffers
