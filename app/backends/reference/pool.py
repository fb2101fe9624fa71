"""Max and average pooling, as torch.nn.MaxPool1d/2d/3d and AvgPool1d/2d/3d.

Max pooling walks the kernel offsets (kH*kW of them, a handful) and takes, for each offset, the
strided slice of the padded input that every window reads at that offset: one vectorized step per
offset over all windows at once. It is PyTorch's own loop order, so ties and NaNs come out the same.
Average pooling sums one dimension at a time (kH slices, then kW), as a box sum allows: the same
sums up to rounding, with far less memory read.
"""

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np

from app.shapes import output_size


def _pad_for_windows(x: np.ndarray, out: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int], value: float) -> np.ndarray:
    """Pads the trailing dims with `value`: `padding` on the left, and on the right as far as the
    last window reaches (with ceil_mode it may run past the right padding)."""
    widths = [(0, 0)] * (x.ndim - len(out))
    for n, size, k, s, p, d in zip(out, x.shape[-len(out):], kernel, stride, padding, dilation):
        widths.append((p, max(0, (n - 1) * s + d * (k - 1) + 1 - size - p)))
    if not any(left or right for left, right in widths):
        return x
    return np.pad(x, widths, constant_values=value)


def _window_slices(x_pad: np.ndarray, out: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                   dilation: Sequence[int]) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """(offset, x_pad[..., i*sH + p*dH, j*sW + q*dW] for all output positions (i, j)) per kernel offset (p, q)."""
    for offset in itertools.product(*(range(k) for k in kernel)):
        slices = tuple(slice(o * d, o * d + (n - 1) * s + 1, s) for o, d, n, s in zip(offset, dilation, out, stride))
        yield offset, x_pad[(..., *slices)]


def max_pool(x: np.ndarray, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
             dilation: Sequence[int], ceil_mode: bool = False,
             return_indices: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Max pooling over the trailing len(kernel) dimensions, as torch.nn.MaxPool1d/2d/3d.

    out[..., i, j] = max_{p, q} x_pad[..., i*sH + p*dH, j*sW + q*dW]      x padded with -inf (not 0)
    indices[..., i, j] = h*W_in + w of the first maximum (the last NaN if any), a flat index into
    each input plane in unpadded coordinates, as PyTorch numbers them.

    x: (*, *spatial); returns (out, indices or None), both (*, *out),
    H_out = floor((H_in + 2*pH - dH*(kH-1) - 1) / sH) + 1 (ceil with ceil_mode, dropping a last
    window that would start in the right padding)
    """
    dims = len(kernel)
    spatial = x.shape[-dims:]
    out = [output_size(*args) for args in zip(spatial, kernel, stride, [(p, p) for p in padding], dilation, [ceil_mode] * dims)]
    x_pad = _pad_for_windows(x, out, kernel, stride, padding, dilation, value=-np.inf)
    best = np.full((*x.shape[:-dims], *out), -np.inf, dtype=x.dtype)
    if not return_indices:
        for _, values in _window_slices(x_pad, out, kernel, stride, dilation):
            np.maximum(best, values, out=best)  # NaN propagates, as in torch
        return best, None

    # Track which kernel offset (numbered row-major) holds each window's maximum; turn it into the
    # flat input index once at the end: sum over dims of (i*s - p + offset*d) * plane stride.
    kernel_steps = [math.prod(kernel[dim + 1:]) for dim in range(dims)]
    plane_steps = [math.prod(spatial[dim + 1:]) for dim in range(dims)]
    starts = [np.arange(n) * s - p for n, s, p in zip(out, stride, padding)]
    # Until a value beats -inf, torch's index is the window's first position inside the input.
    first_inside = [(np.maximum(0, -st) + d - 1) // d for st, d in zip(starts, dilation)]
    winner = np.broadcast_to(sum(np.ix_(*[f * k for f, k in zip(first_inside, kernel_steps)])), best.shape).copy()
    has_nan = bool(np.isnan(x).any())
    shifts = []
    for number, (offset, values) in enumerate(_window_slices(x_pad, out, kernel, stride, dilation)):
        take = values > best  # torch's test: a larger value, or any NaN
        if has_nan:
            take |= np.isnan(values)
        np.copyto(best, values, where=take)
        np.copyto(winner, number, where=take)
        shifts.append(sum(o * d * step for o, d, step in zip(offset, dilation, plane_steps)))
    indices = np.array(shifts, dtype=np.int64)[winner]
    indices += sum(np.ix_(*[st * step for st, step in zip(starts, plane_steps)]))  # each window's start
    return best, indices


def avg_pool(x: np.ndarray, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
             ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override: int | None = None) -> np.ndarray:
    """Average pooling over the trailing len(kernel) dimensions, as torch.nn.AvgPool1d/2d/3d.

    out[..., i, j] = sum_p sum_q x_pad[..., i*sH + p, j*sW + q] / divisor[i, j]      x padded with 0
    divisor = divisor_override if given, else the window's size clipped to the padded input
    (count_include_pad) or to the input alone; per dim [max(start, 0) ..] min(start + k, size + p)
    with start = i*s - p, multiplied over the dims. With ceil_mode a window may overhang the
    padded input; the overhang is never counted.

    x: (*, *spatial); returns (*, *out), H_out = floor((H_in + 2*pH - kH) / sH) + 1 (ceil with ceil_mode)
    """
    dims = len(kernel)
    spatial = x.shape[-dims:]
    ones = [1] * dims
    out = [output_size(*args) for args in zip(spatial, kernel, stride, [(p, p) for p in padding], ones, [ceil_mode] * dims)]
    # A box sum is separable: sum the window along one dimension at a time (k slices each, instead
    # of prod(kernel) slices over the whole window), which reads far less memory.
    total = _pad_for_windows(x, out, kernel, stride, padding, ones, value=0.0)
    for axis, n, k, s in zip(range(x.ndim - dims, x.ndim), out, kernel, stride):
        before = (slice(None),) * axis
        summed = total[(*before, slice(0, (n - 1) * s + 1, s))].copy()
        for offset in range(1, k):
            summed += total[(*before, slice(offset, offset + (n - 1) * s + 1, s))]
        total = summed
    if divisor_override is not None:
        return total / np.asarray(divisor_override, dtype=x.dtype)
    counts = []
    for n, size, k, s, p in zip(out, spatial, kernel, stride, padding):
        start = np.arange(n) * s - p
        end = np.minimum(start + k, size + p)
        counts.append(end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0))
    divisor = math.prod(np.ix_(*counts))  # (*out)
    total /= divisor.astype(x.dtype)
    return total
