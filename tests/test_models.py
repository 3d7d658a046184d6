"""Models: specs, head selection, features."""

import pytest
import torch

from lifelong_kd.models import build_model


def test_mlp_spec_sets_widths_and_parameter_count():
    model = build_model("mlp:400,400", (1, 28, 28), n_heads=1, n_outputs=10)
    expected = (784 * 400 + 400) + (400 * 400 + 400) + (400 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_multi_head_forward_picks_each_samples_head():
    torch.manual_seed(0)
    model = build_model("mlp:16", (1, 8, 8), n_heads=3, n_outputs=2)
    x = torch.randn(6, 1, 8, 8)
    task_id = torch.tensor([0, 1, 2, 2, 1, 0])
    all_logits = model.all_logits(x)
    assert all_logits.shape == (6, 3, 2)
    out = model(x, task_id)
    for i, t in enumerate(task_id.tolist()):
        assert torch.equal(out[i], all_logits[i, t])
    assert torch.equal(model(x, 2), all_logits[:, 2])


def test_multi_head_model_without_task_id_explains_what_to_pass():
    model = build_model("mlp:16", (1, 8, 8), n_heads=3, n_outputs=2)
    with pytest.raises(ValueError, match="task_id"):
        model(torch.randn(2, 1, 8, 8))


@pytest.mark.parametrize("spec,shape", [("convnet:8", (3, 32, 32)), ("resnet18:4", (3, 32, 32)), ("convnet:4", (1, 8, 8))])
def test_conv_models_give_features_and_logits(spec, shape):
    model = build_model(spec, shape, n_heads=2, n_outputs=5)
    x = torch.randn(3, *shape)
    assert model.features(x).ndim == 2
    assert model(x, 1).shape == (3, 5)


def test_auto_picks_mlp_for_grayscale_and_resnet_for_colour():
    assert build_model("auto", (1, 28, 28)).backbone[1].out_features == 400
    assert any(m.__class__.__name__ == "BasicBlock" for m in build_model("auto", (3, 32, 32)).modules())


@pytest.mark.parametrize("spec", ["transformer", "mlp:a,b", "mlp:0"])
def test_bad_specs_are_rejected_with_a_hint(spec):
    with pytest.raises(ValueError, match="mlp"):
        build_model(spec, (1, 8, 8))
