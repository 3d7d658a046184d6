"""Tests for lifelong_kd.teacher: the frozen snapshot used as a distillation teacher."""

import pytest
import torch
from torch import nn

from lifelong_kd.teacher import freeze_copy, is_frozen


def _model_with_dropout_and_batch_norm(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(8, 3),
    )


def _inputs(batch: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 6, generator=torch.Generator().manual_seed(seed))


def _warm_up_batch_norm(model: nn.Module) -> None:
    """Gives the running statistics non-default values."""
    with torch.no_grad():
        for seed in range(3):
            model(_inputs(seed=10 + seed) * 3 + 1)


def test_freeze_copy_returns_model_in_eval_mode():
    teacher = freeze_copy(_model_with_dropout_and_batch_norm())
    assert not teacher.training
    assert all(not module.training for module in teacher.modules())


def test_freeze_copy_sets_requires_grad_false_on_all_parameters():
    teacher = freeze_copy(_model_with_dropout_and_batch_norm())
    parameters = list(teacher.parameters())
    assert parameters and all(not parameter.requires_grad for parameter in parameters)


def test_freeze_copy_leaves_original_model_trainable_and_in_train_mode():
    model = _model_with_dropout_and_batch_norm()
    freeze_copy(model)
    assert model.training
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_freeze_copy_is_a_different_object_with_equal_weights_and_buffers():
    model = _model_with_dropout_and_batch_norm()
    _warm_up_batch_norm(model)
    teacher = freeze_copy(model)
    assert teacher is not model
    model_state, teacher_state = model.state_dict(), teacher.state_dict()
    assert model_state.keys() == teacher_state.keys()
    for name, tensor in model_state.items():
        assert torch.equal(tensor, teacher_state[name]), name
        assert tensor.data_ptr() != teacher_state[name].data_ptr(), name


def test_training_student_leaves_teacher_weights_unchanged():
    student = _model_with_dropout_and_batch_norm()
    teacher = freeze_copy(student)
    before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    optimiser = torch.optim.SGD(student.parameters(), lr=0.5)
    targets = torch.tensor([0, 1, 2, 0] * 4)
    for step in range(3):
        optimiser.zero_grad()
        nn.functional.cross_entropy(student(_inputs(seed=step)), targets).backward()
        optimiser.step()
    assert not torch.equal(student[0].weight, before["0.weight"])  # the student did move
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_teacher_output_is_deterministic_and_matches_original_in_eval_mode():
    model = _model_with_dropout_and_batch_norm()
    _warm_up_batch_norm(model)
    teacher = freeze_copy(model)
    inputs = _inputs()
    first, second = teacher(inputs), teacher(inputs)
    assert torch.equal(first, second)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(first, model(inputs), atol=1e-6)


def test_teacher_forward_does_not_update_batch_norm_running_statistics():
    teacher = freeze_copy(_model_with_dropout_and_batch_norm())
    running_mean = teacher[1].running_mean.clone()
    teacher(_inputs() * 5 + 2)
    assert torch.equal(teacher[1].running_mean, running_mean)


def test_train_mode_model_is_not_deterministic_which_is_why_teacher_uses_eval():
    # Guard for the test above: with dropout in train mode two calls differ.
    model = _model_with_dropout_and_batch_norm()
    inputs = _inputs()
    torch.manual_seed(2)
    assert not torch.equal(model(inputs), model(inputs))


def test_backward_through_student_and_teacher_leaves_teacher_grads_none():
    student = _model_with_dropout_and_batch_norm()
    teacher = freeze_copy(student)
    inputs = _inputs()
    loss = (student(inputs) - teacher(inputs)).pow(2).mean()
    loss.backward()
    assert all(parameter.grad is None for parameter in teacher.parameters())
    assert all(parameter.grad is not None for parameter in student.parameters())


def test_is_frozen_is_true_only_for_eval_mode_models_without_trainable_parameters():
    model = _model_with_dropout_and_batch_norm()
    teacher = freeze_copy(model)
    assert is_frozen(teacher)
    assert not is_frozen(model)
    teacher.train()
    assert not is_frozen(teacher)
    teacher.eval()
    teacher[0].weight.requires_grad_(True)
    assert not is_frozen(teacher)


def test_freeze_copy_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        freeze_copy({"weight": torch.zeros(2)})
