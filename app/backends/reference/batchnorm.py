"""Batch normalization, as torch.nn.BatchNorm1d/2d/3d in training and evaluation mode."""

import math

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

    An empty batch (count = 0) gives an empty y and NaN statistics (the mean of no values); in
    training the running statistics stay as they were and num_batches_tracked still counts it, as
    torch does.
    """
    N, C = x.shape[:2]
    xr = x.reshape(N, C, math.prod(x.shape[2:]))  # (N, C, L), L = prod(spatial), 1 for (N, C); not -1: N may be 0
    tracked = running_mean is not None
    buffers: dict[str, np.ndarray] = {}
    if tracked:  # unchanged unless training updates them below
        assert running_mean is not None and running_var is not None and num_batches_tracked is not None
        buffers = {"running_mean": running_mean, "running_var": running_var, "num_batches_tracked": num_batches_tracked}
    if training or not tracked:
        count = N * xr.shape[2]
        if count == 0:
            return _empty_batch(x, running_mean, running_var, num_batches_tracked, training=training)
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
            assert running_mean is not None and running_var is not None and num_batches_tracked is not None
            batches = num_batches_tracked + 1
            factor = 1.0 / batches if momentum is None else momentum
            buffers = {
                "running_mean": ((1 - factor) * running_mean + factor * mean).astype(running_mean.dtype),
                "running_var": ((1 - factor) * running_var + factor * var * count / (count - 1)).astype(
                    running_var.dtype
                ),
                "num_batches_tracked": np.asarray(batches, dtype=np.int64),
            }
    else:
        assert running_mean is not None and running_var is not None  # tracked
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


def batch_norm_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray | None,
    mean: np.ndarray,
    var: np.ndarray,
    *,
    batch_statistics: bool,
    eps: float = 1e-5,
    bias: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of `batch_norm` given the upstream gradient dY, with x̂ = (x - E[x]) / σ, σ = sqrt(Var[x] + eps).

    batch statistics (training, or evaluation without running statistics), through E[x] and Var[x]:
        dX = (γ / σ) · (dY - mean(dY) - x̂ · mean(dY · x̂))        means over (N, *spatial) per channel
    running statistics (evaluation), a per-channel affine map:
        dX = (γ / σ) · dY
    both:   dγ = Σ dY · x̂,   dβ = Σ dY                               sums over (N, *spatial)

    x, grad_output: (N, C) or (N, C, *spatial); weight: (C,) or None (affine=False: γ = 1, no dγ);
    mean, var: (C,) what normalized x (`batch_norm`'s returned statistics, or the running ones);
    bias: whether the layer has β. Returns (dX like x, dγ (C,) or None, dβ (C,) or None).
    An empty batch gives an empty dX and zero dγ, dβ, as torch.
    """
    N, C = x.shape[:2]
    L = math.prod(x.shape[2:])
    count = N * L
    if count == 0:
        # No values: every sum is 0, as torch's (its batch_norm of an empty input is x·γ + β), and the
        # statistics of no values (NaN) must not reach them.
        grad_weight = None if weight is None else np.zeros_like(weight)
        grad_bias = np.zeros(C, dtype=x.dtype) if bias and weight is not None else None
        return np.zeros_like(x), grad_weight, grad_bias
    xr, dyr = x.reshape(N, C, L), grad_output.reshape(N, C, L)
    inv_std = 1.0 / np.sqrt(var.astype(np.float64) + eps)  # (C,), 1/σ
    # Per-channel sums in float64 over N of sums along the contiguous L (pairwise for Σ dY; a dot
    # product per (n, c) row for Σ dY · (x - E[x]), which needs no scratch array), as the forward.
    sum_dy = dyr.sum(axis=2).sum(axis=0, dtype=np.float64)  # (C,), Σ dY
    centered = np.subtract(xr, mean.astype(x.dtype)[:, None])  # (N, C, L), x - E[x]; becomes dX below
    dots = np.matmul(dyr[:, :, None, :], centered[:, :, :, None])  # (N, C, 1, 1)
    sum_dy_xhat = dots.sum(axis=(0, 2, 3), dtype=np.float64) * inv_std  # (C,), Σ dY · x̂
    scale = (1.0 if weight is None else weight.astype(np.float64)) * inv_std  # (C,), γ / σ
    grad_weight = None if weight is None else sum_dy_xhat.astype(weight.dtype)
    grad_bias = sum_dy.astype(x.dtype) if bias and weight is not None else None
    if not batch_statistics:
        return np.multiply(dyr, scale.astype(x.dtype)[:, None]).reshape(x.shape), grad_weight, grad_bias
    # dX = (γ/σ) · (dY - mean(dY) - x̂ · mean(dY · x̂)) with x̂ · mean(dY · x̂) = (x - E[x]) · mean(dY · x̂) / σ,
    # four passes in place on x - E[x]
    centered *= (sum_dy_xhat / count * inv_std).astype(x.dtype)[:, None]
    np.subtract(dyr, centered, out=centered)
    centered -= (sum_dy / count).astype(x.dtype)[:, None]
    centered *= scale.astype(x.dtype)[:, None]
    return centered.reshape(x.shape), grad_weight, grad_bias


def _empty_batch(
    x: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    num_batches_tracked: np.ndarray | None,
    *,
    training: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """x with no values per channel: y = x (empty), mean = var = NaN (C,); running statistics unchanged,
    num_batches_tracked += 1 in training (torch's batch_norm returns before the update)."""
    nan = np.full(x.shape[1], np.nan, dtype=x.dtype)
    if running_mean is None or running_var is None or num_batches_tracked is None:
        return x.copy(), nan, nan.copy(), {}
    batches = num_batches_tracked + 1 if training else num_batches_tracked
    return (
        x.copy(),
        nan,
        nan.copy(),
        {
            "running_mean": running_mean,
            "running_var": running_var,
            "num_batches_tracked": np.asarray(batches, dtype=np.int64),
        },
    )
