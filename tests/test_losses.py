"""Tests for lifelong_kd.losses: golden values, properties, gradients, pitfalls."""

import math

import pytest
import torch
import torch.nn.functional as F

from lifelong_kd import losses
from lifelong_kd.losses import (
    entropy,
    feature_distance,
    hard_soft_loss,
    kd_kl,
    soft_cross_entropy,
)

LN3 = math.log(3.0)


def _softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    """Plain-Python softmax, independent of torch."""
    exps = [math.exp(value / temperature) for value in row]
    total = sum(exps)
    return [value / total for value in exps]


def _kl(p: list[float], q: list[float]) -> float:
    """Plain-Python KL(p || q) in nats."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _random_logits(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=dtype) * 2.0


# ---------------------------------------------------------------- kd_kl golden values


def test_kd_kl_golden_single_row_without_t2():
    # t/T = [ln 3, 0] -> p = [3/4, 1/4]; s = [0, 0] -> q = [1/2, 1/2].
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * LN3, 0.0]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # 0.130812...
    value = kd_kl(student, teacher, temperature=2.0, scale_t2=False)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.1308121, abs=1e-6)


def test_kd_kl_golden_single_row_with_t2_is_four_times_larger_at_t2():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * LN3, 0.0]])
    expected = 4.0 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert kd_kl(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_kl_golden_batch_is_mean_of_rows_summed_over_classes():
    # Row 0 as above; row 1: p = [1/2, 1/2], q = [1/4, 3/4] -> KL = 0.5 ln(4/3).
    student = torch.tensor([[0.0, 0.0], [0.0, 2 * LN3]])
    teacher = torch.tensor([[2 * LN3, 0.0], [0.0, 0.0]])
    row0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    row1 = 0.5 * math.log(4.0 / 3.0)
    value = kd_kl(student, teacher, temperature=2.0, scale_t2=False)
    assert value.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_kd_kl_golden_three_classes_against_plain_python():
    student_rows = [[1.0, -0.5, 2.0], [0.3, 0.3, -1.2]]
    teacher_rows = [[0.0, 1.5, -1.0], [2.0, -0.7, 0.1]]
    temperature = 3.0
    expected = temperature**2 * sum(
        _kl(_softmax(t, temperature), _softmax(s, temperature))
        for s, t in zip(student_rows, teacher_rows)
    ) / len(student_rows)
    value = kd_kl(torch.tensor(student_rows), torch.tensor(teacher_rows), temperature)
    assert value.item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- kd_kl properties


def test_kd_kl_is_zero_when_student_equals_teacher():
    logits = _random_logits(5, 7)
    assert kd_kl(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_kl_is_non_negative_on_random_inputs():
    for seed in range(10):
        student = _random_logits(4, 6, seed=seed)
        teacher = _random_logits(4, 6, seed=seed + 100)
        assert kd_kl(student, teacher).item() >= 0.0


def test_kd_kl_is_not_symmetric_argument_order_matters():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[LN3, 0.0]])
    forward = kd_kl(student, teacher, temperature=1.0, scale_t2=False).item()
    swapped = kd_kl(teacher, student, temperature=1.0, scale_t2=False).item()
    # KL(p||q) with p = [3/4, 1/4], q = [1/2, 1/2] vs KL(q||p) = 0.5 ln(4/3).
    assert forward == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    assert swapped == pytest.approx(0.5 * math.log(4.0 / 3.0), rel=1e-6)
    assert abs(forward - swapped) > 1e-3


def test_kd_kl_multi_head_equals_mean_of_per_head_values():
    student = _random_logits(4, 3, 5, seed=1)
    teacher = _random_logits(4, 3, 5, seed=2)
    per_head = [kd_kl(student[:, head], teacher[:, head]) for head in range(3)]
    expected = torch.stack(per_head).mean()
    assert torch.allclose(kd_kl(student, teacher), expected, atol=1e-6)


def test_kd_kl_reduction_is_batchmean_duplicated_rows_leave_value_unchanged():
    student = _random_logits(3, 4, seed=3)
    teacher = _random_logits(3, 4, seed=4)
    doubled = kd_kl(torch.cat([student, student]), torch.cat([teacher, teacher]))
    assert torch.allclose(kd_kl(student, teacher), doubled, atol=1e-6)


def test_kd_kl_is_not_class_mean_reduction():
    # reduction="mean" would divide by B*C instead of B: guard against that mistake.
    student = _random_logits(3, 4, seed=5)
    teacher = _random_logits(3, 4, seed=6)
    elementwise = F.kl_div(
        F.log_softmax(student / 2, dim=1), F.softmax(teacher / 2, dim=1), reduction="none"
    )
    assert kd_kl(student, teacher, scale_t2=False).item() == pytest.approx(
        elementwise.sum().item() / 3, rel=1e-5
    )
    assert kd_kl(student, teacher, scale_t2=False).item() != pytest.approx(
        elementwise.mean().item(), rel=1e-3
    )


def test_kd_kl_expects_logits_probabilities_give_a_different_value():
    student = _random_logits(4, 5, seed=7)
    teacher = _random_logits(4, 5, seed=8)
    from_logits = kd_kl(student, teacher).item()
    from_probs = kd_kl(student.softmax(dim=1), teacher.softmax(dim=1)).item()
    assert abs(from_logits - from_probs) > 1e-2


def test_kd_kl_is_invariant_to_per_row_logit_shift():
    student = _random_logits(3, 4, seed=9)
    teacher = _random_logits(3, 4, seed=10)
    shifted = kd_kl(student + 5.0, teacher - 3.0)
    assert torch.allclose(kd_kl(student, teacher), shifted, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_kd_kl_rejects_non_positive_or_non_finite_temperature(temperature):
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="temperature"):
        kd_kl(logits, logits, temperature=temperature)


def test_kd_kl_rejects_mismatched_shapes_naming_both():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        kd_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_kd_kl_rejects_unbatched_logits():
    with pytest.raises(ValueError, match="batch"):
        kd_kl(torch.zeros(3), torch.zeros(3))


# ---------------------------------------------------------------- soft_cross_entropy


def test_soft_cross_entropy_golden_value():
    # p = [3/4, 1/4], q = [1/2, 1/2]: -(3/4 ln 1/2 + 1/4 ln 1/2) = ln 2.
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * LN3, 0.0]])
    assert soft_cross_entropy(student, teacher).item() == pytest.approx(math.log(2), rel=1e-6)
    scaled = soft_cross_entropy(student, teacher, scale_t2=True).item()
    assert scaled == pytest.approx(4 * math.log(2), rel=1e-6)


def test_soft_cross_entropy_golden_three_classes_against_plain_python():
    student_rows = [[1.0, -0.5, 2.0], [0.3, 0.3, -1.2]]
    teacher_rows = [[0.0, 1.5, -1.0], [2.0, -0.7, 0.1]]
    expected = 0.0
    for s, t in zip(student_rows, teacher_rows):
        p, q = _softmax(t, 2.0), _softmax(s, 2.0)
        expected -= sum(pi * math.log(qi) for pi, qi in zip(p, q)) / 2
    value = soft_cross_entropy(torch.tensor(student_rows), torch.tensor(teacher_rows))
    assert value.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 5)])
def test_soft_cross_entropy_equals_kd_kl_plus_teacher_entropy(shape):
    student = _random_logits(*shape, seed=11, dtype=torch.float64)
    teacher = _random_logits(*shape, seed=12, dtype=torch.float64)
    temperature = 2.5
    left = soft_cross_entropy(student, teacher, temperature)
    right = kd_kl(student, teacher, temperature, scale_t2=False) + entropy(teacher, temperature)
    assert torch.allclose(left, right, atol=1e-10)


def test_soft_cross_entropy_and_kd_kl_give_same_student_gradient():
    teacher = _random_logits(4, 5, seed=13, dtype=torch.float64)
    student_a = _random_logits(4, 5, seed=14, dtype=torch.float64).requires_grad_(True)
    student_b = student_a.detach().clone().requires_grad_(True)
    soft_cross_entropy(student_a, teacher).backward()
    kd_kl(student_b, teacher, scale_t2=False).backward()
    assert torch.allclose(student_a.grad, student_b.grad, atol=1e-12)


# ---------------------------------------------------------------- hard_soft_loss


def test_hard_soft_loss_golden_value():
    # CE([0, 0], y=0) = ln 2; kd_kl with T^2 at T=2 = 4 * KL([3/4, 1/4] || [1/2, 1/2]).
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * LN3, 0.0]])
    targets = torch.tensor([0])
    distillation = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    expected = 0.75 * math.log(2) + 0.25 * distillation
    value = hard_soft_loss(student, targets, teacher, alpha=0.25, temperature=2.0, scale_t2=True)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_hard_soft_loss_endpoints_are_pure_label_and_pure_distillation_losses():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * LN3, 0.0]])
    targets = torch.tensor([1])
    label_only = hard_soft_loss(student, targets, teacher, alpha=0.0, temperature=2.0)
    distill_only = hard_soft_loss(
        student, targets, teacher, alpha=1.0, temperature=2.0, scale_t2=False
    )
    assert label_only.item() == pytest.approx(math.log(2), rel=1e-6)
    assert distill_only.item() == pytest.approx(
        0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6
    )


def test_hard_soft_loss_accepts_multi_head_targets():
    student = _random_logits(4, 2, 3, seed=15)
    teacher = _random_logits(4, 2, 3, seed=16)
    targets = torch.tensor([[0, 1], [2, 0], [1, 1], [2, 2]])
    label_loss = torch.stack(
        [F.cross_entropy(student[:, head], targets[:, head]) for head in range(2)]
    ).mean()
    expected = 0.5 * label_loss + 0.5 * kd_kl(student, teacher)
    value = hard_soft_loss(student, targets, teacher, alpha=0.5)
    assert torch.allclose(value, expected, atol=1e-6)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_hard_soft_loss_rejects_alpha_outside_unit_interval(alpha):
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="alpha"):
        hard_soft_loss(logits, torch.tensor([0, 1]), logits, alpha=alpha)


def test_hard_soft_loss_rejects_targets_of_wrong_shape():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="targets"):
        hard_soft_loss(logits, torch.tensor([0, 1, 2]), logits, alpha=0.5)


# ---------------------------------------------------------------- feature_distance

# s = [[3, 4], [2, 0]], t = [[4, 3], [1, 0]] -> d = [[-1, 1], [1, 0]].
FEATURE_STUDENT = [[3.0, 4.0], [2.0, 0.0]]
FEATURE_TEACHER = [[4.0, 3.0], [1.0, 0.0]]
FEATURE_GOLDEN = {
    "mse": (1 + 1 + 1 + 0) / 4,  # mean over all 4 elements
    "l2": (math.sqrt(2) + 1.0) / 2,  # mean over batch of ||d_n||
    "cosine": ((1 - 24 / 25) + (1 - 1.0)) / 2,  # row 0: (12 + 12) / (5 * 5)
}


@pytest.mark.parametrize("kind", sorted(FEATURE_GOLDEN))
def test_feature_distance_golden_values(kind):
    value = feature_distance(
        torch.tensor(FEATURE_STUDENT), torch.tensor(FEATURE_TEACHER), kind=kind
    )
    assert value.item() == pytest.approx(FEATURE_GOLDEN[kind], rel=1e-6)


@pytest.mark.parametrize("kind", losses.FEATURE_DISTANCE_KINDS)
def test_feature_distance_flattens_trailing_dimensions(kind):
    student = torch.tensor(FEATURE_STUDENT).reshape(2, 1, 2, 1)
    teacher = torch.tensor(FEATURE_TEACHER).reshape(2, 1, 2, 1)
    value = feature_distance(student, teacher, kind=kind)
    assert value.item() == pytest.approx(FEATURE_GOLDEN[kind], rel=1e-6)


@pytest.mark.parametrize("kind", losses.FEATURE_DISTANCE_KINDS)
def test_feature_distance_is_zero_for_identical_features(kind):
    features = _random_logits(3, 4, seed=17)
    value = feature_distance(features, features.clone(), kind=kind)
    assert value.item() == pytest.approx(0.0, abs=1e-6)


def test_feature_distance_cosine_ignores_scale_but_mse_does_not():
    features = _random_logits(3, 4, seed=18)
    assert feature_distance(3 * features, features, "cosine").item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert feature_distance(3 * features, features, "mse").item() > 0.1


def test_feature_distance_l2_gradient_is_finite_when_student_equals_teacher():
    # At the start of each experience the student equals its snapshot exactly.
    student = _random_logits(3, 4, seed=19).requires_grad_(True)
    feature_distance(student, student.detach().clone(), "l2").backward()
    assert torch.isfinite(student.grad).all()


def test_feature_distance_rejects_unknown_kind_listing_valid_ones():
    features = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="mse, l2, cosine"):
        feature_distance(features, features, kind="manhattan")


def test_feature_distance_rejects_shape_mismatch_suggesting_projection():
    with pytest.raises(ValueError, match=r"\(2, 8\).*\(2, 16\).*projection"):
        feature_distance(torch.zeros(2, 8), torch.zeros(2, 16))


def test_feature_distance_rejects_features_without_batch_axis():
    with pytest.raises(ValueError, match="batch"):
        feature_distance(torch.zeros(4), torch.zeros(4))


# ---------------------------------------------------------------- entropy


def test_entropy_of_uniform_logits_is_log_number_of_classes():
    assert entropy(torch.zeros(3, 4)).item() == pytest.approx(math.log(4), rel=1e-6)
    assert entropy(torch.full((2, 10), 7.0)).item() == pytest.approx(math.log(10), rel=1e-6)


def test_entropy_of_near_one_hot_logits_is_near_zero():
    assert entropy(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_golden_value_with_temperature():
    # [2 ln 3, 0] / 2 -> p = [3/4, 1/4]; H = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623...
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    logits = torch.tensor([[2 * LN3, 0.0]])
    assert entropy(logits, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)
    assert entropy(logits).item() == pytest.approx(
        -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)), rel=1e-6
    )


def test_entropy_is_mean_over_batch():
    logits = torch.tensor([[0.0, 0.0], [100.0, 0.0]])  # ln 2 and ~0
    assert entropy(logits).item() == pytest.approx(math.log(2) / 2, rel=1e-6)


def test_entropy_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        entropy(torch.zeros(2, 3), temperature=0.0)


# ---------------------------------------------------------------- gradients


GRADCHECK_FUNCTIONS = {
    "kd_kl": lambda s, t: kd_kl(s, t, temperature=2.0),
    "kd_kl_multi_head": lambda s, t: kd_kl(s.reshape(2, 2, 3), t.reshape(2, 2, 3)),
    "soft_cross_entropy": lambda s, t: soft_cross_entropy(s, t, temperature=1.5),
    "feature_distance_mse": lambda s, t: feature_distance(s, t, "mse"),
    "feature_distance_l2": lambda s, t: feature_distance(s, t, "l2"),
    "feature_distance_cosine": lambda s, t: feature_distance(s, t, "cosine"),
    "entropy": lambda s, t: entropy(s, temperature=1.5),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_FUNCTIONS))
def test_gradcheck_with_respect_to_student(name):
    function = GRADCHECK_FUNCTIONS[name]
    student = _random_logits(4, 3, seed=20, dtype=torch.float64).requires_grad_(True)
    teacher = _random_logits(4, 3, seed=21, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: function(s, teacher), (student,))


TEACHER_INPUT_FUNCTIONS = {
    "kd_kl": lambda s, t: kd_kl(s, t),
    "soft_cross_entropy": lambda s, t: soft_cross_entropy(s, t),
    "hard_soft_loss": lambda s, t: hard_soft_loss(s, torch.tensor([0, 1, 2, 0]), t, 0.5),
    "feature_distance_mse": lambda s, t: feature_distance(s, t, "mse"),
    "feature_distance_l2": lambda s, t: feature_distance(s, t, "l2"),
    "feature_distance_cosine": lambda s, t: feature_distance(s, t, "cosine"),
}


@pytest.mark.parametrize("name", sorted(TEACHER_INPUT_FUNCTIONS))
def test_teacher_input_receives_no_gradient(name):
    student = _random_logits(4, 3, seed=22).requires_grad_(True)
    teacher = _random_logits(4, 3, seed=23).requires_grad_(True)
    TEACHER_INPUT_FUNCTIONS[name](student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["kd_kl", "soft_cross_entropy", "feature_distance", "entropy"])
def test_bfloat16_inputs_are_computed_in_float32(name):
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    low = [t.to(torch.bfloat16) for t in (student, teacher)]
    function = getattr(losses, name)
    args = low[:1] if name == "entropy" else low
    value = function(*args)
    expected = function(*[t.float() for t in args])
    assert value.dtype == torch.float32
    assert torch.equal(value, expected)


@pytest.mark.parametrize("classes", [2, 10, 15, 16, 100])
def test_log_softmax_equals_torchs_in_value_and_gradient(classes):
    from lifelong_kd.losses import log_softmax

    generator = torch.Generator().manual_seed(classes)
    logits = (torch.randn(64, 3, classes, generator=generator) * 30).requires_grad_(True)  # large scores: stability matters
    reference = logits.detach().clone().requires_grad_(True)
    ours, theirs = log_softmax(logits), torch.nn.functional.log_softmax(reference, dim=-1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    weights = torch.randn(ours.shape, generator=generator)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    torch.testing.assert_close(logits.grad, reference.grad, rtol=1e-5, atol=1e-5)
