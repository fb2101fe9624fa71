"""Losses, as torch.nn.functional.mse_loss and cross_entropy, and a plain sum: each returns the loss
and its gradient with respect to the input, the upstream gradient a backward pass starts from.

`reduction` is "mean" or "sum", as in torch. The loss comes back as a 0-d array of the input's dtype.
"""

import numpy as np

REDUCTIONS = ("mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def sum_loss(x: np.ndarray, reduction: str = "sum") -> tuple[np.ndarray, np.ndarray]:
    """The loss a plain `output.sum()` (or `.mean()`) is: dL/dx is all ones (or 1/n).

    L = Σ x                dL/dx = 1              (reduction "sum")
    L = Σ x / n            dL/dx = 1 / n          (reduction "mean", n = x.size)

    x: any shape; returns (L 0-d, dL/dx like x)
    """
    _check_reduction(reduction)
    if reduction == "sum":
        return np.asarray(x.sum(dtype=np.float64), dtype=x.dtype), np.ones_like(x)
    n = x.size
    mean = x.sum(dtype=np.float64) / n if n else np.nan  # an empty x: NaN, as torch's mean
    return np.asarray(mean, dtype=x.dtype), np.full_like(x, 1.0 / n if n else np.nan)


def mse_loss(x: np.ndarray, target: np.ndarray, reduction: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Mean squared error, as torch.nn.functional.mse_loss.

    L = Σ (x - t)² / n     dL/dx = 2 (x - t) / n  (reduction "mean", n = x.size)
    L = Σ (x - t)²         dL/dx = 2 (x - t)      (reduction "sum")

    x: any shape; target: x's shape; returns (L 0-d, dL/dx like x)
    """
    _check_reduction(reduction)
    if target.shape != x.shape:
        raise ValueError(f"target shape {list(target.shape)} differs from the input shape {list(x.shape)}")
    diff = np.subtract(x, target, dtype=x.dtype)
    total = np.square(diff, dtype=np.float64).sum()
    n = x.size if reduction == "mean" else 1
    loss = total / n if n else np.nan  # an empty x: NaN, as torch's mean
    # asarray: on a 0-d x, NumPy's arithmetic gives a scalar
    return np.asarray(loss, dtype=x.dtype), np.asarray(diff * x.dtype.type(2.0 / n if n else np.nan))


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """log softmax(x) = x - max(x) - log Σ exp(x - max(x)) along `axis` (the max makes exp safe)."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy(
    x: np.ndarray, target: np.ndarray, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Cross entropy of logits, as torch.nn.functional.cross_entropy (no class weights).

    p = softmax(x) along the class dimension C (dimension 1, or 0 for an unbatched (C,) input),
    log p = log_softmax(x) written out stably; per sample (n, and every extra dimension d...):

    class indices t (integers):     ℓ = -(1 - ε) log p[t] - (ε / C) Σ_c log p[c]
        dℓ/dx = p - (1 - ε) onehot(t) - ε / C;  samples with t == ignore_index count for nothing:
        ℓ = 0, gradient 0, and "mean" divides by the number of other samples
    class probabilities t (floats, x's shape):   t' = (1 - ε) t + ε / C,  ℓ = -Σ_c t'[c] log p[c]
        dℓ/dx = p Σ_c t'[c] - t';  "mean" divides by the number of samples N * prod(d...)
    L = Σ ℓ (reduction "sum") or that sum / the count above ("mean"); ε = label_smoothing

    x: (C,), (N, C) or (N, C, d1, ...); target: (), (N,) or (N, d1, ...) integers in [0, C) or
    ignore_index, or x's shape (probabilities). Returns (L 0-d, dL/dx like x)
    """
    _check_reduction(reduction)
    axis = 0 if x.ndim == 1 else 1
    classes = x.shape[axis]
    log_p = log_softmax(x, axis)
    p = np.exp(log_p)
    smooth = label_smoothing / classes
    if np.issubdtype(target.dtype, np.floating):  # probabilities
        if target.shape != x.shape:
            raise ValueError(
                f"probability target shape {list(target.shape)} differs from the input shape {list(x.shape)}"
            )
        soft = target * (1 - label_smoothing) + smooth
        losses = -(soft * log_p).sum(axis=axis)
        grad = p * soft.sum(axis=axis, keepdims=True) - soft
        count = losses.size
    else:
        expected = x.shape[:axis] + x.shape[axis + 1 :]
        if target.shape != expected:
            raise ValueError(
                f"class index target shape {list(target.shape)} should be {list(expected)} for input {list(x.shape)}"
            )
        kept = target != ignore_index
        if np.any((target[kept] < 0) | (target[kept] >= classes)):
            raise ValueError(f"class index target out of range [0, {classes}) (ignore_index {ignore_index} excepted)")
        picks = np.expand_dims(np.where(kept, target, 0), axis)  # ignored samples pick class 0, then count 0
        losses = -(1 - label_smoothing) * np.take_along_axis(log_p, picks, axis).squeeze(axis) - smooth * log_p.sum(
            axis=axis
        )
        grad = p - smooth
        np.put_along_axis(grad, picks, np.take_along_axis(grad, picks, axis) - (1 - label_smoothing), axis)
        losses = np.where(kept, losses, 0)
        grad *= np.expand_dims(kept, axis)
        count = int(kept.sum())
    total = losses.sum(dtype=np.float64)
    if reduction == "sum":
        return np.asarray(total, dtype=x.dtype), grad.astype(x.dtype, copy=False)
    scale = 1.0 / count if count else np.nan  # nothing counted: NaN, as torch
    return np.asarray(total * scale, dtype=x.dtype), (grad * x.dtype.type(scale)).astype(x.dtype, copy=False)
