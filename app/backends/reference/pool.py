"""Max and average pooling, as torch.nn.MaxPool1d/2d/3d and AvgPool1d/2d/3d.

Max pooling walks the kernel offsets (kH*kW of them, a handful) and takes, for each offset, the
strided slice of the padded input that every window reads at that offset: one vectorized step per
offset over all windows at once. It is PyTorch's own loop order, so ties and NaNs come out the same.
Average pooling sums one dimension at a time (kH slices, then kW), as a box sum allows: the same
sums up to rounding, with far less memory read.

Their backward passes: max pooling sends each upstream gradient to the index its forward returned;
average pooling spreads it over the window one dimension at a time, the box sum's adjoint.
"""

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np

from app.shapes import output_size


def _pad_for_windows(
    x: np.ndarray,
    out: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    value: float,
) -> np.ndarray:
    """Pads the trailing dims with `value`: `padding` on the left, and on the right as far as the
    last window reaches (with ceil_mode it may run past the right padding)."""
    widths = [(0, 0)] * (x.ndim - len(out))
    for n, size, k, s, p, d in zip(out, x.shape[-len(out) :], kernel, stride, padding, dilation):
        widths.append((p, max(0, (n - 1) * s + d * (k - 1) + 1 - size - p)))
    if not any(left or right for left, right in widths):
        return x
    return np.pad(x, widths, constant_values=value)


def _window_slices(
    x_pad: np.ndarray, out: Sequence[int], kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """(offset, x_pad[..., i*sH + p*dH, j*sW + q*dW] for all output positions (i, j)) per kernel offset (p, q)."""
    for offset in itertools.product(*(range(k) for k in kernel)):
        slices = tuple(slice(o * d, o * d + (n - 1) * s + 1, s) for o, d, n, s in zip(offset, dilation, out, stride))
        yield offset, x_pad[(..., *slices)]  # type: ignore[arg-type]  # numpy's stubs reject Ellipsis + slices


def max_pool(
    x: np.ndarray,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
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
    out = [
        output_size(*args)
        for args in zip(spatial, kernel, stride, [(p, p) for p in padding], dilation, [ceil_mode] * dims)
    ]
    x_pad = _pad_for_windows(x, out, kernel, stride, padding, dilation, value=-np.inf)
    best = np.full((*x.shape[:-dims], *out), -np.inf, dtype=x.dtype)
    if not return_indices:
        for _, values in _window_slices(x_pad, out, kernel, stride, dilation):
            np.maximum(best, values, out=best)  # NaN propagates, as in torch
        return best, None

    # Track which kernel offset (numbered row-major) holds each window's maximum; turn it into the
    # flat input index once at the end: sum over dims of (i*s - p + offset*d) * plane stride.
    kernel_steps = [math.prod(kernel[dim + 1 :]) for dim in range(dims)]
    plane_steps = [math.prod(spatial[dim + 1 :]) for dim in range(dims)]
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


def avg_pool(
    x: np.ndarray,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
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
    out = [
        output_size(*args) for args in zip(spatial, kernel, stride, [(p, p) for p in padding], ones, [ceil_mode] * dims)
    ]
    # A box sum is separable: sum the window along one dimension at a time (k slices each, instead
    # of prod(kernel) slices over the whole window), which reads far less memory.
    total = _pad_for_windows(x, out, kernel, stride, padding, ones, value=0.0)
    for axis, n, k, s in zip(range(x.ndim - dims, x.ndim), out, kernel, stride):
        before = (slice(None),) * axis
        summed = total[(*before, slice(0, (n - 1) * s + 1, s))].copy()
        for offset in range(1, k):
            summed += total[(*before, slice(offset, offset + (n - 1) * s + 1, s))]
        total = summed
    total /= _avg_divisor(out, spatial, kernel, stride, padding, count_include_pad, divisor_override).astype(x.dtype)
    return total


def _avg_divisor(
    out: Sequence[int],
    spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    count_include_pad: bool,
    divisor_override: int | None,
) -> np.ndarray:
    """Each window's divisor, (*out): divisor_override if given, else its size clipped to the padded
    input (count_include_pad) or to the input alone."""
    if divisor_override is not None:
        return np.asarray(divisor_override)
    counts = []
    for n, size, k, s, p in zip(out, spatial, kernel, stride, padding):
        start = np.arange(n) * s - p
        end = np.minimum(start + k, size + p)
        counts.append(end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0))
    return np.asarray(math.prod(np.ix_(*counts)))


def max_pool_backward(
    grad_output: np.ndarray,
    indices: np.ndarray,
    input_shape: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> np.ndarray:
    """Gradient of `max_pool`: each upstream gradient goes to the arg-max of its window.

    dX[..., indices[..., i, j]] += dY[..., i, j]      (indices: `max_pool`'s, flat per input plane)

    accumulating where windows overlap (a position that is the maximum of several windows gets the
    sum). The -inf padding has no position in dX, so it never receives gradient; a window that reads
    only padding (refused by the layer's shape check) would carry an index outside the plane, and
    its gradient is dropped here rather than written out of bounds.

    grad_output, indices: (*, *out); input_shape: (*, *spatial); kernel, stride, dilation: to know
    whether windows can overlap (if not, the indices are distinct and a plain assignment does);
    returns dX (*, *spatial)
    """
    dims = len(kernel)
    plane = math.prod(input_shape[-dims:])
    planes, windows = math.prod(input_shape[:-dims]), math.prod(indices.shape[-dims:])
    flat = indices.reshape(planes, windows) + (np.arange(planes) * plane)[:, None]  # (planes, windows) into dX
    upstream = grad_output.reshape(planes, windows)
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        inside = ((indices >= 0) & (indices < plane)).reshape(planes, windows)
        flat, upstream = flat[inside], upstream[inside]
    grad = np.zeros(planes * plane, dtype=grad_output.dtype)
    if all(s >= d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation, strict=True)):
        grad[flat.ravel()] = upstream.ravel()  # windows are disjoint: every index appears once
    else:
        np.add.at(grad, flat.ravel(), upstream.ravel())
    return grad.reshape(input_shape)


def avg_pool_backward(
    grad_output: np.ndarray,
    input_shape: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Gradient of `avg_pool`: each upstream gradient spread evenly over its window by its divisor.

    dX[..., i*sH + p - pH, j*sW + q - pW] += dY[..., i, j] / divisor[i, j]   for 0 <= p < kH, 0 <= q < kW

    with `avg_pool`'s divisor (divisor_override, or the window clipped per count_include_pad; ceil_mode
    is in the output's shape); what lands in the zero padding is dropped. Spread one dimension at a time, the
    adjoint of the forward's separable box sum.

    grad_output: (*, *out); input_shape: (*, *spatial); returns dX (*, *spatial)
    """
    dims = len(kernel)
    spatial, out = input_shape[-dims:], grad_output.shape[-dims:]
    divisor = _avg_divisor(out, spatial, kernel, stride, padding, count_include_pad, divisor_override)
    grad = grad_output / divisor.astype(grad_output.dtype)
    for axis, n, size, k, s, p in zip(
        range(grad.ndim - dims, grad.ndim), out, spatial, kernel, stride, padding, strict=True
    ):
        spread = np.zeros((*grad.shape[:axis], size, *grad.shape[axis + 1 :]), dtype=grad.dtype)
        before = (slice(None),) * axis
        for offset in range(k):  # window i reads position i*s + offset - p: keep those inside the input
            first = max(0, -(-(p - offset) // s))  # ceil((p - offset) / s)
            last = min(n - 1, (size - 1 + p - offset) // s)
            if first > last:
                continue
            target = spread[(*before, slice(first * s + offset - p, last * s + offset - p + 1, s))]
            values = grad[(*before, slice(first, last + 1))]
            if s >= k:  # windows are disjoint along this axis: nothing to accumulate
                target[...] = values
            else:
                target += values
        grad = spread
    return grad
