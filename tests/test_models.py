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


def test_conv_models_are_channels_last_and_compute_what_nchw_computes():
    torch.manual_seed(0)
    fast = build_model("convnet:8", (3, 32, 32), 2, 5)
    plain = build_model("convnet:8", (3, 32, 32), 2, 5, channels_last=False)
    plain.load_state_dict(fast.state_dict())
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert next(m for m in plain.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous()
    x = torch.randn(4, 3, 32, 32)
    fast.eval(), plain.eval()
    assert torch.allclose(fast.all_logits(x), plain.all_logits(x), atol=1e-5)


def test_inference_batch_size_is_large_for_mlps_small_for_convnets_and_keeps_the_mode():
    from lifelong_kd.models import inference_batch_size

    mlp = build_model("mlp:1000,1000", (1, 28, 28), 1, 10)
    conv = build_model("convnet:32", (3, 32, 32), 5, 2)
    assert inference_batch_size(mlp, (1, 28, 28)) == 1024
    size = inference_batch_size(conv, (3, 32, 32))
    assert size == 32  # widest activation 32 x 32 x 32 = 2**15 elements; budget 2**20
    assert conv.training and mlp.training
    assert inference_batch_size(conv, (3, 32, 32), budget=2**30) == 1024
    assert inference_batch_size(conv, (3, 32, 32), budget=1) == 16
