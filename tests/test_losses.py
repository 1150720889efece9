"""The distillation loss against independent float64 numpy values and the paper's equations;
losses as objects: the registry, the terms the loop sums, ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdistill import DistillationLoss, distillation_loss, ensemble_soft_targets, soft_targets
from kdistill.errors import KDistillError
from kdistill.losses import (
    LOSSES,
    DistillationObjective,
    HintonLoss,
    make_loss,
    parse_loss_args,
    register,
    sum_terms,
)


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_reference(z, v, y, temperature, alpha):
    """The objective written out in numpy, float64, from the paper's definitions."""
    p = _np_softmax(v / temperature)  # teacher soft targets
    q = _np_softmax(z / temperature)  # student soft predictions
    kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    hard = _np_softmax(z)
    ce = -np.mean(np.log(hard[np.arange(len(y)), y]))
    return alpha * temperature**2 * kl + (1 - alpha) * ce


FIXED_Z = np.array([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0], [-1.0, 4.0, 0.0, 1.0]])
FIXED_V = np.array([[3.0, -2.0, 1.0, 0.0], [0.0, 0.5, 2.0, -1.0], [0.0, 5.0, -1.0, 2.0]])
FIXED_Y = np.array([0, 2, 1])


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9), (20.0, 1.0), (2.5, 0.0)])
def test_matches_independent_float64_values(temperature, alpha):
    z, v, y = torch.tensor(FIXED_Z), torch.tensor(FIXED_V), torch.tensor(FIXED_Y)
    got = distillation_loss(z, v, y, temperature=temperature, alpha=alpha)
    expected = _np_reference(FIXED_Z, FIXED_V, FIXED_Y, temperature, alpha)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_golden_value_written_by_hand():
    # Two classes, T = 2, alpha = 1: p = softmax([0, 2]/2), q = softmax([0, 0]) = (1/2, 1/2).
    p1 = 1 / (1 + np.exp(-1.0))
    kl = (1 - p1) * np.log((1 - p1) / 0.5) + p1 * np.log(p1 / 0.5)
    got = distillation_loss(
        torch.zeros(1, 2, dtype=torch.float64),
        torch.tensor([[0.0, 2.0]], dtype=torch.float64),
        temperature=2.0,
        alpha=1.0,
    )
    assert float(got) == pytest.approx(4 * kl, rel=1e-12)


def test_soft_term_gradient_is_paper_equation_2():
    # dC/dz_i = (q_i - p_i) / T for the soft cross-entropy; the batch mean divides by B.
    torch.manual_seed(0)
    batch, temperature = 5, 3.0
    z = torch.randn(batch, 10, dtype=torch.float64, requires_grad=True)
    v = torch.randn(batch, 10, dtype=torch.float64)
    loss = distillation_loss(z, v, temperature=temperature, alpha=1.0) / temperature**2
    (grad,) = torch.autograd.grad(loss, z)
    q, p = soft_targets(z.detach(), temperature), soft_targets(v, temperature)
    torch.testing.assert_close(grad * batch, (q - p) / temperature, rtol=1e-12, atol=1e-14)


def test_soft_term_gradient_at_high_temperature_is_paper_equation_4():
    # With zero-mean logits and T >> logits: dC/dz_i ~ (z_i - v_i) / (N T^2).
    torch.manual_seed(1)
    classes, temperature = 10, 500.0
    z = torch.randn(1, classes, dtype=torch.float64)
    v = torch.randn(1, classes, dtype=torch.float64)
    z, v = (z - z.mean()).requires_grad_(True), v - v.mean()
    loss = distillation_loss(z, v, temperature=temperature, alpha=1.0) / temperature**2
    (grad,) = torch.autograd.grad(loss, z)
    expected = (z.detach() - v) / (classes * temperature**2)
    torch.testing.assert_close(grad, expected, rtol=5e-3, atol=0)


def test_alpha_zero_is_plain_cross_entropy():
    torch.manual_seed(2)
    z, v, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    got = distillation_loss(z, v, y, temperature=7.0, alpha=0.0)
    torch.testing.assert_close(got, F.cross_entropy(z, y))


def test_t_squared_keeps_the_soft_gradient_scale_across_temperatures():
    torch.manual_seed(3)
    z = torch.randn(64, 10, dtype=torch.float64) * 3
    v = torch.randn(64, 10, dtype=torch.float64) * 3

    def grad_norm(temperature: float, scaled: bool) -> float:
        zz = z.clone().requires_grad_(True)
        loss = distillation_loss(zz, v, temperature=temperature, alpha=1.0)
        if not scaled:
            loss = loss / temperature**2
        (grad,) = torch.autograd.grad(loss, zz)
        return float(grad.norm())

    temperatures = [1.0, 2.0, 5.0, 10.0, 20.0]
    with_t2 = [grad_norm(t, True) for t in temperatures]
    without = [grad_norm(t, False) for t in temperatures]
    assert max(with_t2) / min(with_t2) < 2.5
    assert max(without) / min(without) > 100  # what T^2 corrects


def test_ensemble_soft_targets_average_member_probabilities():
    torch.manual_seed(4)
    members = [torch.randn(6, 4, dtype=torch.float64) for _ in range(3)]
    expected = sum(_np_softmax(m.numpy() / 2.0) for m in members) / 3
    got = ensemble_soft_targets(members, 2.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(ensemble_soft_targets(torch.stack(members), 2.0).numpy(), expected)


def test_ensemble_loss_is_kl_to_the_mean_distribution():
    torch.manual_seed(5)
    members = [torch.randn(6, 4, dtype=torch.float64) for _ in range(3)]
    z = torch.randn(6, 4, dtype=torch.float64)
    got = distillation_loss(z, members, temperature=3.0, alpha=1.0)
    p = ensemble_soft_targets(members, 3.0).numpy()
    q = _np_softmax(z.numpy() / 3.0)
    expected = 9.0 * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_module_equals_function():
    torch.manual_seed(6)
    z, v, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    criterion = DistillationLoss(temperature=4.0, alpha=0.7)
    torch.testing.assert_close(
        criterion(z, v, y), distillation_loss(z, v, y, temperature=4.0, alpha=0.7)
    )
    assert "temperature=4.0" in repr(criterion)


def test_loss_is_zero_when_student_matches_teacher():
    v = torch.randn(4, 3)
    assert float(distillation_loss(v, v, temperature=5.0, alpha=1.0)) == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"temperature": 0.0, "alpha": 0.5}, "temperature must be a finite number > 0"),
        ({"temperature": -1.0, "alpha": 0.5}, "temperature must be a finite number > 0"),
        ({"temperature": float("nan"), "alpha": 0.5}, "temperature must be a finite number > 0"),
        ({"temperature": 2.0, "alpha": 1.5}, r"alpha .* must be in \[0, 1\]"),
        ({"temperature": 2.0, "alpha": -0.1}, r"alpha .* must be in \[0, 1\]"),
    ],
)
def test_bad_temperature_or_alpha(kwargs, message):
    z, y = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=message):
        distillation_loss(z, z, y, **kwargs)
    with pytest.raises(ValueError, match=message):
        DistillationLoss(**kwargs)


def test_mismatched_class_counts():
    with pytest.raises(ValueError, match="teacher has 4 classes but student has 3"):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 4), temperature=2.0, alpha=1.0)


def test_mismatched_batch_or_rank():
    with pytest.raises(ValueError, match="teacher logits must be"):
        distillation_loss(torch.randn(2, 3), torch.randn(5, 3), temperature=2.0, alpha=1.0)
    with pytest.raises(ValueError, match="student logits must be"):
        distillation_loss(torch.randn(3), torch.randn(3), temperature=2.0, alpha=1.0)


def test_labels_needed_and_in_range():
    z = torch.randn(2, 3)
    with pytest.raises(ValueError, match="labels are needed"):
        distillation_loss(z, z, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        distillation_loss(z, z, torch.tensor([0, 3]), temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="integer class indices"):
        distillation_loss(z, z, torch.tensor([0.0, 1.0]), temperature=2.0, alpha=0.5)
    # alpha = 1 needs no labels
    distillation_loss(z, z, temperature=2.0, alpha=1.0)


# --------------------------------------------------------------------------- losses as objects


def _batch(seed: int = 7, members: int | None = None):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, 4, generator=g)
    shape = (6, 4) if members is None else (members, 6, 4)
    return z, torch.randn(*shape, generator=g) * 2, torch.randint(0, 4, (6,), generator=g)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_hinton_loss_terms_sum_to_distillation_loss_bit_for_bit(alpha):
    z, v, y = _batch()
    terms = make_loss("hinton", temperature=3.0, alpha=alpha)(z, v, y)
    # a term of weight 0 is left out (its work is not done)
    assert set(terms) == {"soft", "hard"} - ({"hard"} if alpha == 1 else set()) - (
        {"soft"} if alpha == 0 else set()
    )
    assert all(t.dim() == 0 for t in terms.values())
    total = distillation_loss(z, v, y, temperature=3.0, alpha=alpha)
    assert torch.equal(sum_terms(terms), total)


def test_hinton_loss_takes_an_ensemble_as_one_tensor():
    z, v, y = _batch(members=3)
    criterion = make_loss("hinton", temperature=2.0, alpha=0.6)
    as_tensor, as_list = (
        criterion(z, v, y),
        distillation_loss(z, list(v), y, temperature=2.0, alpha=0.6),
    )
    assert torch.equal(sum_terms(as_tensor), as_list)
    # the soft term is the KL to the mean of the members' probabilities
    p = ensemble_soft_targets(v, 2.0)
    q = torch.log_softmax(z / 2.0, dim=-1)
    expected = 0.6 * 4.0 * (p * (p.log() - q)).sum(dim=1).mean()
    torch.testing.assert_close(as_tensor["soft"], expected)


def test_hinton_loss_without_a_teacher_says_what_to_do():
    z, _, y = _batch()
    with pytest.raises(KDistillError, match="needs a teacher.*'cross-entropy'"):
        make_loss("hinton", temperature=2.0)(z, None, y)
    # alpha = 0 needs no teacher: it is cross-entropy
    assert set(make_loss("hinton", alpha=0.0)(z, None, y)) == {"hard"}


def test_cross_entropy_loss_is_plain_cross_entropy():
    z, v, y = _batch()
    terms = make_loss("cross-entropy")(z, None, y)
    assert list(terms) == ["hard"] and torch.equal(terms["hard"], F.cross_entropy(z, y))
    assert torch.equal(make_loss("cross-entropy")(z, v, y)["hard"], terms["hard"])  # ignores v


def test_registry_names_and_arguments():
    assert {"hinton", "cross-entropy"} <= set(LOSSES)
    assert make_loss("hinton", temperature=4, alpha=0.5).arguments() == {
        "temperature": 4.0,
        "alpha": 0.5,
    }
    assert make_loss("hinton").arguments() == {"temperature": 1.0, "alpha": 1.0}
    assert make_loss("cross-entropy").arguments() == {}
    assert "temperature=4.0" in repr(make_loss("hinton", temperature=4))


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("hintn", {}, "unknown loss 'hintn': choose one of .*cross-entropy.*hinton"),
        ("hinton", {"temprature": 2.0}, "takes no argument 'temprature'; .* temperature, alpha"),
        ("cross-entropy", {"alpha": 0.5}, "takes no argument 'alpha'; its arguments are none"),
        ("hinton", {"temperature": 0}, "loss 'hinton': temperature must be a finite number > 0"),
        ("hinton", {"alpha": 2}, r"loss 'hinton': alpha .* must be in \[0, 1\]"),
        ("hinton", {"temperature": "hot"}, "loss 'hinton' .*could not convert"),
    ],
)
def test_registry_refuses_with_one_line(name, arguments, message):
    with pytest.raises(KDistillError, match=message) as caught:
        make_loss(name, **arguments)
    assert "\n" not in str(caught.value)


def test_parse_loss_args_reads_literals():
    parsed = parse_loss_args(["temperature=4", "alpha=0.9", "warmup=true", "mode=kl", "x=none"])
    assert parsed == {"temperature": 4, "alpha": 0.9, "warmup": True, "mode": "kl", "x": None}
    assert parse_loss_args(["beta-weight=1e-3"]) == {"beta_weight": 0.001}
    for bad in (["temperature"], ["=4"], ["a b=1"]):
        with pytest.raises(KDistillError, match="KEY=VALUE"):
            parse_loss_args(bad)
    with pytest.raises(KDistillError, match="given twice"):
        parse_loss_args(["alpha=0.1", "alpha=0.2"])


class _SingleTeacherLoss(DistillationObjective):
    """A loss defined for one teacher only, not registered (defined in a test)."""

    name = "single-teacher-test"
    supports_ensemble = False

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, student_logits, teacher_logits, labels):
        return {"mse": self.weight * F.mse_loss(student_logits, teacher_logits)}


def test_a_loss_without_an_ensemble_refuses_member_logits():
    z, v, y = _batch(members=2)
    loss = _SingleTeacherLoss(0.5)
    assert loss.arguments() == {"weight": 0.5}  # the default arguments(): attributes by name
    loss(z, v[0], y)
    with pytest.raises(KDistillError, match="does not define an ensemble teacher \\(2 members"):
        loss(z, v, y)


def test_register_needs_a_name_and_refuses_a_second_class_of_the_same_name():
    class Nameless(DistillationObjective):
        pass

    with pytest.raises(TypeError, match="needs a class attribute name"):
        register(Nameless)

    class Impostor(DistillationObjective):
        name = "hinton"

    with pytest.raises(TypeError, match="two losses named 'hinton'"):
        register(Impostor)
    assert LOSSES["hinton"] is HintonLoss
