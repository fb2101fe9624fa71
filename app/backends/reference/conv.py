"""Convolution, as torch.nn.Conv1d/2d/3d: padding, then im2col and one matrix product per group."""

import math
from collections.abc import Sequence

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
    return np.pad(x, widths, mode=NUMPY_PAD_MODES[mode])


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: Sequence[int],
         padding: Padding, dilation: Sequence[int], groups: int, padding_mode: str = "zeros") -> np.ndarray:
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
        x, shape=(N, C_in, *kernel, *out),
        strides=(batch_step, channel_step, *(st * d for st, d in zip(steps, dilation)), *(st * s for st, s in zip(steps, stride))),
        writeable=False)
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
            block = windows[n:n + samples, ..., r:r + rows, *[slice(None)] * (len(out) - 1)]
            cols = block.reshape(block.shape[0], groups, K, -1)  # the im2col copy: (n, groups, K, positions)
            part = y[n:n + samples, :, :, r * row:(r + rows) * row]  # (n, groups, C_out/groups, positions)
            np.matmul(kernels, cols, out=part)
            if bias is not None:  # added while the block is still in cache
                part += bias.reshape(groups, C_out // groups, 1)
    return y.reshape(N, C_out, *out)
