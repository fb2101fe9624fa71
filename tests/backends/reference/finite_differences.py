"""Central finite differences in float64, NumPy only: a check of the hand-written backward
formulas that does not come from torch (gradcheck-style)."""

from collections.abc import Callable

import numpy as np

STEP = 1e-6
"""Central differences err by O(STEP²) (curvature) + O(1e-16 / STEP) (rounding): ~1e-10 here."""


def numerical_gradients(f: Callable[..., np.ndarray], inputs: dict[str, np.ndarray], grad_output: np.ndarray,
                        step: float = STEP) -> dict[str, np.ndarray]:
    """dL/d(each input) for L = Σ f(**inputs) · grad_output, one central difference per element:
    (L(v + step) - L(v - step)) / (2 step)."""
    grads = {}
    for name, value in inputs.items():
        grad = np.zeros_like(value, dtype=np.float64)
        flat = value.reshape(-1)  # a view: nudging it nudges the input
        for i in range(flat.size):
            kept = flat[i]
            flat[i] = kept + step
            above = np.sum(f(**inputs) * grad_output)
            flat[i] = kept - step
            below = np.sum(f(**inputs) * grad_output)
            flat[i] = kept
            grad.reshape(-1)[i] = (above - below) / (2 * step)
        grads[name] = grad
    return grads


def assert_matches_finite_differences(f: Callable[..., np.ndarray], inputs: dict[str, np.ndarray],
                                      grad_output: np.ndarray, analytic: dict[str, np.ndarray | None],
                                      rtol: float = 1e-6, atol: float = 1e-7) -> None:
    """The hand-written gradients (by input name) against central differences of `f`."""
    for name, value in inputs.items():
        assert value.dtype == np.float64 and value.flags.c_contiguous, f"{name}: float64, C-contiguous (nudged in place)"
    numeric = numerical_gradients(f, inputs, grad_output)
    for name, grad in analytic.items():
        assert grad is not None, f"no analytic gradient for {name}"
        assert grad.shape == inputs[name].shape, f"{name}: gradient shape {grad.shape}, input shape {inputs[name].shape}"
        np.testing.assert_allclose(grad, numeric[name], rtol=rtol, atol=atol,
                                   err_msg=f"d/d{name}: hand-written (actual) vs central differences (desired)")
