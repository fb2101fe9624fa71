"""Output sizes of sliding-window layers (convolution, pooling) as pure integer arithmetic.

The notebook's `output_height` / `output_width` cells, generalized to 1-3 spatial dimensions,
asymmetric padding ("same") and ceil_mode:

    H_out = floor((H_in + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1

One place for these formulas: the layer specs validate with them before anything is allocated,
responses quote them with the numbers substituted, the reference backend sizes its outputs by them.
No NumPy, no torch.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import ShapeMismatch

Shape = tuple[int, ...]
Padding = tuple[tuple[int, int], ...]
"""(left, right) padding per spatial dimension."""

DIM_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
DIM_WORDS = {"L": "length", "D": "depth", "H": "height", "W": "width"}


def expand(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    """torch's _single/_pair/_triple: an int stands for the same value in every dimension."""
    return (value,) * dims if isinstance(value, int) else tuple(value)


def symmetric(padding: int | Sequence[int], dims: int) -> Padding:
    """An int or per-dimension padding, applied on both sides."""
    return tuple((p, p) for p in expand(padding, dims))


def same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> Padding:
    """padding="same": d*(k-1) in total per dimension; when odd, the extra one goes on the
    right (left = total // 2), as PyTorch splits it."""
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return tuple((t // 2, t - t // 2) for t in totals)


def output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """floor((size + left + right - dilation*(kernel-1) - 1) / stride) + 1, or ceil with ceil_mode,
    in which case a last window that would start in the right padding is dropped (PyTorch's rule:
    every window starts inside the input or the left padding). May be < 1: callers check."""
    left, right = padding
    span = size + left + right - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + left:
        out -= 1
    return out


def formula(
    name: str, size: int, kernel: int, stride: int, padding: tuple[int, int], dilation: int, ceil_mode: bool = False
) -> str:
    """'H_out = floor((120 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 59', the numbers substituted."""
    left, right = padding
    pad = f"2*{left}" if left == right else f"{left}+{right}"
    rounding = "ceil" if ceil_mode else "floor"
    text = f"{name}_out = {rounding}(({size} + {pad} - {dilation}*({kernel}-1) - 1) / {stride}) + 1"
    span = size + left + right - dilation * (kernel - 1) - 1
    unclipped = (-(-span // stride) if ceil_mode else span // stride) + 1
    out = output_size(size, kernel, stride, padding, dilation, ceil_mode)
    if out == unclipped:
        return f"{text} = {out}"
    return (
        f"{text} - 1 = {out} (ceil_mode: the last window would start at {(unclipped - 1) * stride} "
        f"of the padded input, inside the right padding, so it is dropped)"
    )


@dataclass(frozen=True)
class Window:
    """A window sliding over the spatial dimensions: all a conv or pool output-size formula needs."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Padding
    dilation: tuple[int, ...]
    ceil_mode: bool = False

    @property
    def dims(self) -> int:
        return len(self.kernel)

    @property
    def names(self) -> tuple[str, ...]:
        return DIM_NAMES[self.dims]

    def effective_kernel(self) -> tuple[int, ...]:
        """Span of a dilated kernel: dilation*(kernel-1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def _per_dim(self, spatial: Sequence[int]):
        return zip(self.names, spatial, self.kernel, self.stride, self.padding, self.dilation)

    def output_sizes(self, spatial: Sequence[int]) -> Shape:
        """Output size per spatial dimension (unchecked; see `check`)."""
        return tuple(output_size(size, k, s, p, d, self.ceil_mode) for _, size, k, s, p, d in self._per_dim(spatial))

    def formulas(self, spatial: Sequence[int]) -> list[str]:
        """One substituted formula per spatial dimension."""
        return [formula(name, size, k, s, p, d, self.ceil_mode) for name, size, k, s, p, d in self._per_dim(spatial)]

    def check(self, spatial: Sequence[int], field: str = "input") -> Shape:
        """Output sizes, or a 422 naming the dimension whose output would be below 1 (the kernel
        does not fit in the padded input), with the formula."""
        sizes = self.output_sizes(spatial)
        for (name, size, k, s, p, d), out in zip(self._per_dim(spatial), sizes):
            if out < 1:
                word = DIM_WORDS[name]
                raise ShapeMismatch(
                    f"output {word} would be {out}, less than 1: the kernel spans {d * (k - 1) + 1} "
                    f"(dilation*(kernel_size-1) + 1) but the padded input {word} is {size + p[0] + p[1]}: "
                    f"{formula(name, size, k, s, p, d, self.ceil_mode)}",
                    field=field,
                    expected=f"padded input {word} >= {d * (k - 1) + 1}",
                    actual=size,
                )
        return sizes

    def padding_only_windows(self, spatial: Sequence[int]) -> list[tuple[str, int, list[int]]]:
        """(dimension name, output index, the padded positions it reads) of every window that reads
        no input element in some dimension, so none at all: with a dilation that steps over the
        input, e.g. kernel 2, padding 1, dilation 3 on a length-2 input reads positions -1 and 2.

        Windows start before the input only in the left padding (start = i*s - left < 0, so
        i < left / s: a handful), and every window starts before the input's end (output_size drops
        a ceil_mode window that would start in the right padding), so only those few are checked."""
        found = []
        for (name, size, k, s, (left, _), d), n in zip(self._per_dim(spatial), self.output_sizes(spatial), strict=True):
            for i in range(min(n, -(-left // s))):
                start = i * s - left  # < 0
                first = (-start + d - 1) // d  # the first kernel offset at or past position 0
                if first >= k or start + first * d >= size:
                    found.append((name, i, [start + j * d for j in range(k)]))
        return found


def split_input_shape(
    shape: Sequence[int], dims: int, torch_name: str, field: str = "input"
) -> tuple[bool, int, Shape]:
    """(batched, channels, spatial) of a batched (N, C, *spatial) or unbatched (C, *spatial) input."""
    if len(shape) not in (dims + 1, dims + 2):
        names = ", ".join(f"{n}_in" for n in DIM_NAMES[dims])
        raise ShapeMismatch(
            f"{torch_name} expects a {dims + 1}-D (C, {names}) unbatched or {dims + 2}-D (N, C, {names}) batched "
            f"input; got a {len(shape)}-D input of shape {list(shape)}",
            field=field,
            expected=[dims + 1, dims + 2],
            actual=list(shape),
        )
    batched = len(shape) == dims + 2
    return batched, shape[1 if batched else 0], tuple(shape[-dims:])
