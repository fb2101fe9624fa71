"""The reference losses (mse_loss, cross_entropy, sum), each a loss and its gradient, against
torch.nn.functional with autograd, and against central finite differences in float64."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.backends.reference.loss import cross_entropy, mse_loss, sum_loss
from tests.backends.reference.against_torch import assert_grad_close
from tests.backends.reference.finite_differences import assert_matches_finite_differences

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DTYPES = {"float32": torch.float32, "float64": torch.float64}
REDUCTIONS = ["mean", "sum"]


def check(mine: tuple[np.ndarray, np.ndarray], loss: torch.Tensor, x: torch.Tensor, terms: int, what: str) -> None:
    """The reference (loss, gradient) against torch's loss and autograd's gradient of it."""
    loss.backward()
    mine_loss, mine_grad = mine
    assert mine_loss.shape == () and mine_loss.dtype == x.numpy(force=True).dtype, what
    assert_grad_close(mine_loss, loss.detach(), terms=terms, what=f"{what}: loss")
    assert_grad_close(mine_grad, x.grad, terms=1, what=f"{what}: gradient")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(), (7,), (4, 3), (2, 3, 4, 5), (0, 3)])
def test_mse_loss_matches_autograd(shape, reduction, dtype):
    gen = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, generator=gen, dtype=DTYPES[dtype], requires_grad=True)
    target = torch.randn(shape, generator=gen, dtype=DTYPES[dtype])
    loss = F.mse_loss(x, target, reduction=reduction)
    check(mse_loss(x.detach().numpy(), target.numpy(), reduction), loss, x, x.numel(), f"mse_loss {shape} {reduction}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4), (0, 3)])
def test_sum_loss_matches_autograd(shape, reduction, dtype):
    x = torch.randn(shape, dtype=DTYPES[dtype], requires_grad=True)
    loss = x.sum() if reduction == "sum" else x.mean()
    check(sum_loss(x.detach().numpy(), reduction), loss, x, x.numel(), f"sum {shape} {reduction}")


# (input shape, target shape): unbatched (C,), a batch (N, C), extra dimensions (N, C, d1, d2), an empty batch
CE_SHAPES = [((5,), ()), ((6, 5), (6,)), ((3, 4, 2, 3), (3, 2, 3)), ((0, 4), (0,))]
CE_GRID = list(itertools.product(CE_SHAPES, ("indices", "probabilities"), REDUCTIONS, (0.0, 0.2), DTYPES))


@pytest.mark.parametrize("shapes, target_kind, reduction, label_smoothing, dtype", CE_GRID)
def test_cross_entropy_matches_autograd(shapes, target_kind, reduction, label_smoothing, dtype):
    case = CE_GRID.index((shapes, target_kind, reduction, label_smoothing, dtype))
    gen = torch.Generator().manual_seed(case)
    (shape, target_shape), classes = shapes, shapes[0][0 if len(shapes[0]) == 1 else 1]
    x = (torch.randn(shape, generator=gen, dtype=DTYPES[dtype]) * 3).requires_grad_()
    if target_kind == "indices":
        target = torch.randint(0, classes, target_shape, generator=gen)
    else:
        target = torch.softmax(torch.randn(shape, generator=gen, dtype=DTYPES[dtype]), dim=0 if len(shape) == 1 else 1)
    loss = F.cross_entropy(x, target, reduction=reduction, label_smoothing=label_smoothing)
    mine = cross_entropy(x.detach().numpy(), target.numpy(), reduction, label_smoothing=label_smoothing)
    check(mine, loss, x, x.numel(), f"cross_entropy {shape} {target_kind} {reduction} ε={label_smoothing}")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_ignore_index_matches_autograd(reduction, label_smoothing):
    """Samples whose class is ignore_index (-100) count for nothing, also in the mean's divisor."""
    x = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0, -100], [2, 1], [-100, -100], [1, 0], [2, -100]])
    loss = F.cross_entropy(x, target, reduction=reduction, label_smoothing=label_smoothing)
    check(cross_entropy(x.detach().numpy(), target.numpy(), reduction, label_smoothing=label_smoothing),
          loss, x, x.numel(), "cross_entropy ignore_index")


def test_cross_entropy_is_stable_for_large_logits():
    """log-softmax with the maximum subtracted: no overflow to inf or NaN at logits of 1e4."""
    x = torch.tensor([[1e4, 0.0, -1e4], [3.0, 1e4 + 1, 2.0]], dtype=torch.float32, requires_grad=True)
    target = torch.tensor([1, 1])
    loss, grad = cross_entropy(x.detach().numpy(), target.numpy())
    assert np.isfinite(loss) and np.isfinite(grad).all()
    check((loss, grad), F.cross_entropy(x, target), x, 6, "cross_entropy large logits")


@pytest.mark.parametrize("bad", ["reduction", "class", "shape"])
def test_bad_arguments_are_refused(bad):
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match={"reduction": "reduction", "class": "out of range", "shape": "shape"}[bad]):
        if bad == "reduction":
            cross_entropy(x, np.array([0, 1]), reduction="none")
        elif bad == "class":
            cross_entropy(x, np.array([0, 3]))
        else:
            mse_loss(x, np.zeros((3, 2)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_match_finite_differences(reduction):
    rng = np.random.default_rng(len(reduction))
    x = rng.standard_normal((3, 4, 2))
    target = rng.standard_normal(x.shape)
    indices = rng.integers(0, 4, (3, 2))
    indices[0, 1] = -100
    probabilities = np.exp(target) / np.exp(target).sum(axis=1, keepdims=True)
    one = np.ones(())  # the upstream gradient of a scalar loss
    cases = {
        "mse_loss": lambda x: mse_loss(x, target, reduction),
        "sum": lambda x: sum_loss(x, reduction),
        "cross_entropy indices": lambda x: cross_entropy(x, indices, reduction, label_smoothing=0.1),
        "cross_entropy probabilities": lambda x: cross_entropy(x, probabilities, reduction, label_smoothing=0.1),
    }
    for name, loss in cases.items():
        _, grad = loss(x)
        assert_matches_finite_differences(lambda x, loss=loss: loss(x)[0], {"x": x}, one, {"x": grad})
        assert grad.shape == x.shape, name
