"""Convolution, as torch.nn.Conv1d/2d/3d: padding, then im2col and one matrix product per group;
its backward: the same columns for dW, their transposed product with dY added back (col2im) for dX."""

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from app.shapes import Padding, output_size

# torch padding_mode -> np.pad mode: 'reflect' mirrors without repeating the edge (as torch's
# reflect), 'edge' repeats it (replicate), 'wrap' is circular.
NUMPY_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

IM2COL_BUDGET = 2**19
"""Most elements of one im2col block (2 MiB of float32, about one core's L2 cache): the block is
copied and then multiplied while still in cache. On the notebook's Conv2d this took the reference
from 21 ms (one 50 MB block) to 13 ms; larger batches are done a few samples at a time."""


def pad(x: np.ndarray, padding: Padding, mode: str = "zeros") -> np.ndarray:
    """Pads the trailing len(padding) dimensions by (left, right) each, as torch.nn.functional.pad
    with mode constant (zeros) / reflect / replicate / circular. Returns `x` itself when there is none."""
    if not any(left or right for left, right in padding):
        return x
    widths = [(0, 0)] * (x.ndim - len(padding)) + list(padding)
    return np.pad(x, widths, mode=NUMPY_PAD_MODES[mode])  # type: ignore[call-overload]  # mode: a str from the table


def conv(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: Sequence[int],
    padding: Padding,
    dilation: Sequence[int],
    groups: int,
    padding_mode: str = "zeros",
) -> np.ndarray:
    """N-d cross-correlation (the kernel is not flipped), as torch.nn.Conv1d/2d/3d.

    out[n, o, i, j] = bias[o] + sum_{c, p, q} weight[o, c, p, q] * x_pad[n, g(o)*C_in/groups + c, i*sH + p*dH, j*sW + q*dW]
    (2-D written out; the same for 1 or 3 spatial dims), g(o) = o // (C_out/groups) the group of output channel o.

    x: (N, C_in, *spatial); weight: (C_out, C_in/groups, *kernel_size); bias: (C_out,) or None
    padding: (left, right) per spatial dim ("same" already split), filled as `padding_mode` says
    returns (N, C_out, *out), H_out = floor((H_in + 2*pH - dH*(kH-1) - 1) / sH) + 1 per dim
    """
    x = pad(x, padding, padding_mode)
    N, C_in, *padded = x.shape
    C_out, C_group, *kernel = weight.shape
    out = [output_size(size, k, s, (0, 0), d) for size, k, s, d in zip(padded, kernel, stride, dilation)]
    K, L = C_group * math.prod(kernel), math.prod(out)  # one window's elements, output positions

    # im2col as a strided view (no copy): windows[n, c, *kernel offset, *output position]
    batch_step, channel_step, *steps = x.strides
    windows = as_strided(
        x,
        shape=(N, C_in, *kernel, *out),
        strides=(
            batch_step,
            channel_step,
            *(st * d for st, d in zip(steps, dilation)),
            *(st * s for st, s in zip(steps, stride)),
        ),
        writeable=False,
    )
    kernels = weight.reshape(groups, C_out // groups, K)  # (groups, C_out/groups, K)
    y = np.empty((N, groups, C_out // groups, L), dtype=np.result_type(x, weight))
    # The im2col copy takes C_in*prod(kernel) elements per output position: to keep it in cache,
    # take a few samples at a time, or for a huge sample a few rows of its output at a time.
    row = L // out[0]  # output positions per index of the first output dimension
    per_sample = C_in * math.prod(kernel) * L
    samples = max(1, IM2COL_BUDGET // per_sample)
    rows = out[0] if per_sample <= IM2COL_BUDGET else max(1, IM2COL_BUDGET // (per_sample // out[0]))
    for n in range(0, N, samples):
        for r in range(0, out[0], rows):
            block = windows[n : n + samples, ..., r : r + rows, *[slice(None)] * (len(out) - 1)]  # type: ignore[arg-type]
            cols = block.reshape(block.shape[0], groups, K, -1)  # the im2col copy: (n, groups, K, positions)
            part = y[n : n + samples, :, :, r * row : (r + rows) * row]  # (n, groups, C_out/groups, positions)
            np.matmul(kernels, cols, out=part)
            if bias is not None:  # added while the block is still in cache
                part += bias.reshape(groups, C_out // groups, 1)
    return y.reshape(N, C_out, *out)


def _along(axis: int, index: slice | int) -> tuple[slice | int, ...]:
    return (*[slice(None)] * axis, index)


def pad_backward(grad: np.ndarray, padding: Padding, mode: str = "zeros") -> np.ndarray:
    """The adjoint of `pad`: the gradient of the padded array folded back onto the input's positions.

    Per padded dimension of input size S (one dimension at a time; padding is separable):
        zeros      the padding's gradient is dropped:            dx = g[left : left+S]
        replicate  it goes to the edge it copied:                dx[0] += Σ g[:left], dx[S-1] += Σ g[left+S:]
        reflect    to the mirrored position:                     dx[left-j] += g[j], dx[S-1-j] += g[left+S-1+j]
        circular   to the position it wrapped from:              dx[S-left+j] += g[j], dx[j] += g[left+S+j]

    grad: (*, *padded); padding: (left, right) for the trailing len(padding) dims; returns (*, *input)
    """
    for axis, (left, right) in zip(range(grad.ndim - len(padding), grad.ndim), padding, strict=True):
        if not (left or right):
            continue
        size = grad.shape[axis] - left - right
        inner = grad[_along(axis, slice(left, left + size))]
        if mode == "zeros":
            grad = inner
            continue
        inner = inner.copy()
        before, after = grad[_along(axis, slice(0, left))], grad[_along(axis, slice(left + size, None))]
        if mode == "replicate":
            inner[_along(axis, slice(0, 1))] += before.sum(axis=axis, keepdims=True)
            inner[_along(axis, slice(size - 1, size))] += after.sum(axis=axis, keepdims=True)
        elif mode == "reflect":  # before[j] copied x[left - j], after[j] copied x[S - 2 - j]
            inner[_along(axis, slice(1, left + 1))] += np.flip(before, axis=axis)
            inner[_along(axis, slice(size - 1 - right, size - 1))] += np.flip(after, axis=axis)
        else:  # circular: before copied x[S-left:], after copied x[:right]
            inner[_along(axis, slice(size - left, size))] += before
            inner[_along(axis, slice(0, right))] += after
        grad = inner
    return np.ascontiguousarray(grad)


def conv_backward(
    x: np.ndarray,
    weight: np.ndarray,
    grad_output: np.ndarray,
    stride: Sequence[int],
    padding: Padding,
    dilation: Sequence[int],
    groups: int,
    padding_mode: str = "zeros",
    bias: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of `conv` given the upstream gradient dY = dL/dY (2-D written out, as in `conv`).

    dW[o, c, p, q] = sum_{n, i, j} dY[n, o, i, j] * x_pad[n, g(o)*C_in/groups + c, i*sH + p*dH, j*sW + q*dW]
                     (the correlation of X with dY: im2col columns times dY, per group)
    dX_pad[n, g*C_in/groups + c, i*sH + p*dH, j*sW + q*dW] += sum_o weight[o, c, p, q] * dY[n, o, i, j]
                     (the transposed convolution: Wᵀ dY per group, then col2im adds each column back
                     where it was read, accumulating where windows overlap)
    dX = dX_pad with the padding's gradient folded back (`pad_backward`: dropped for zeros, added to
         the positions it copied for reflect, replicate and circular)
    db[o] = sum_{n, i, j} dY[n, o, i, j]

    x: (N, C_in, *spatial); weight: (C_out, C_in/groups, *kernel_size); grad_output: (N, C_out, *out)
    padding: (left, right) per spatial dim, as `conv` takes it
    returns (dX like x, dW like weight, db (C_out,) or None without a bias)
    """
    x_pad = pad(x, padding, padding_mode)
    N, C_in = x_pad.shape[:2]
    C_out, C_group, *kernel = weight.shape
    out = list(grad_output.shape[2:])
    K, L = C_group * math.prod(kernel), math.prod(out)
    batch_step, channel_step, *steps = x_pad.strides
    windows = as_strided(
        x_pad,
        shape=(N, C_in, *kernel, *out),
        strides=(
            batch_step,
            channel_step,
            *(st * d for st, d in zip(steps, dilation, strict=True)),
            *(st * s for st, s in zip(steps, stride, strict=True)),
        ),
        writeable=False,
    )
    kernels_t = weight.reshape(groups, C_out // groups, K).transpose(0, 2, 1)  # (groups, K, C_out/groups)
    dy = grad_output.reshape(N, groups, C_out // groups, L)
    grad_kernels = np.zeros((groups, C_out // groups, K), dtype=np.result_type(x, weight))
    grad_x_pad = np.zeros(x_pad.shape, dtype=grad_kernels.dtype)  # (N, C_in, *padded)
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    # The forward's cache-sized blocks (a few samples, or a few output rows): each block's im2col
    # copy meets its dY for dW while in cache, and its columns' gradient Wᵀ dY goes straight back
    # into the same rows of dX_pad (col2im), one strided addition per kernel offset.
    row = L // out[0]
    per_sample = C_in * math.prod(kernel) * L
    samples = max(1, IM2COL_BUDGET // per_sample)
    rows = out[0] if per_sample <= IM2COL_BUDGET else max(1, IM2COL_BUDGET // (per_sample // out[0]))
    for n in range(0, N, samples):
        for r in range(0, out[0], rows):
            rows_of_samples: tuple[Any, ...] = (
                slice(n, n + samples),
                ...,
                slice(r, r + rows),
                *[slice(None)] * (len(out) - 1),
            )
            block = windows[rows_of_samples]
            taken = block.shape[0], block.shape[2 + len(kernel)]  # samples, first-dimension rows in this block
            cols = block.reshape(taken[0], groups, K, -1)  # the im2col copy: (n, groups, K, positions)
            part = dy[n : n + samples, :, :, r * row : (r + rows) * row]  # (n, groups, C_out/groups, positions)
            grad_kernels += np.matmul(part, cols.transpose(0, 1, 3, 2)).sum(axis=0)
            grad_cols = np.matmul(kernels_t, part).reshape(taken[0], C_in, *kernel, taken[1], *out[1:])
            for offset in offsets:  # col2im: add each kernel offset's columns back where they were read
                starts = [
                    o * d + (r * s if dim == 0 else 0)
                    for dim, (o, d, s) in enumerate(zip(offset, dilation, stride, strict=True))
                ]
                target = [
                    slice(start, start + (size - 1) * s + 1, s)
                    for start, size, s in zip(starts, (taken[1], *out[1:]), stride, strict=True)
                ]
                grad_x_pad[n : n + samples, :, *target] += grad_cols[:, :, *offset]  # (n, C_in, rows, *out[1:])
    grad_bias = grad_output.sum(axis=(0, *range(2, grad_output.ndim))) if bias else None
    return pad_backward(grad_x_pad, padding, padding_mode), grad_kernels.reshape(weight.shape), grad_bias
