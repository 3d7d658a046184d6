"""Models: a backbone that maps inputs to features, and one linear layer holding every head.

All heads live in a single ``nn.Linear(feature_dim, n_heads * n_outputs)``: one matmul
gives every head's logits (``all_logits`` -> (B, H, K)), which is what distillation on
old heads needs, and ``forward(x, task_id)`` picks the head of each sample. With one
head (domain and class scenarios) ``task_id`` is ignored.

Model specs are short strings used by the CLI: ``mlp:400,400``, ``convnet:32``,
``resnet18:20`` (reduced ResNet-18 with 20 base filters, Lopez-Paz & Ranzato 2017).
Convolutional models are built in the channels-last memory format, in which oneDNN's CPU
convolutions ran a ``convnet:32`` training step 1.4-1.6x and its inference 1.7x faster than
NCHW on this project's reference machine (``benchmarks/layout_and_batch.py``); inputs may
stay NCHW.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

MODEL_DESCRIPTIONS = {
    "mlp": "multi-layer perceptron; mlp:W1,W2,... sets hidden widths (default 400,400, van de Ven et al. 2019)",
    "convnet": "small 4-layer ConvNet with batch-norm; convnet:W sets the base width (default 32)",
    "resnet18": "reduced ResNet-18 (Lopez-Paz & Ranzato 2017); resnet18:F sets base filters (default 20)",
    "auto": "mlp:400,400 for grayscale inputs, resnet18:20 for colour images",
}


HEADS = ("linear", "cosine")


class CosineLinear(nn.Module):
    r"""Cosine-normalised linear layer (Hou et al. 2019, LUCIR, Eq. 4).

    .. math::
        z_c = \sigma \, \frac{\langle w_c, f \rangle}{\|w_c\| \, \|f\|}, \qquad
        \sigma = \mathrm{softplus}(s) = \log(1 + e^{s})

    with a learned scale ``sigma`` initialised to 1 (as LUCIR's code and FACIL). The
    parameter is ``s`` (``sigma_raw``), so ``sigma`` stays positive: a parameter holding
    ``sigma`` itself went negative on our split-CIFAR-10 budget (-2.75 after five
    experiences), which turns every score upside down. Softplus rather than ``exp``: its slope
    ``d sigma / d s = sigmoid(s)`` tends to 1 as ``sigma`` grows, so a large scale learns as the
    unconstrained parameter did (``exp`` multiplies each step by ``sigma``: on split-MNIST, where
    ``sigma`` grows to about 11, it cost LUCIR 4.9-7.1 points at buffer 200 and 1.6-3.2 at 500, three
    seeds), and tends to 0 as ``sigma`` nears 0. Logits
    are bounded by ``sigma``, so old and new classes' scores have comparable magnitudes.

    State dicts written with the earlier ``sigma`` key load (``sigma`` > 0 becomes its
    inverse softplus); a non-positive one is refused with a clear error.

    Args:
        in_features: Feature width D.
        out_features: Output units.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default range
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.sigma_raw = nn.Parameter(inverse_softplus(torch.ones(1)))  # sigma = 1 (Hou et al. 2019's code, FACIL)

    @property
    def sigma(self) -> Tensor:
        """The scale ``softplus(sigma_raw)`` (1,), always positive."""
        return nn.functional.softplus(self.sigma_raw)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        """Accept the earlier ``sigma`` key: ``sigma_raw = inverse_softplus(sigma)``."""
        old_key = prefix + "sigma"
        if old_key in state_dict and prefix + "sigma_raw" not in state_dict:
            sigma = state_dict.pop(old_key)
            if not bool((sigma > 0).all()):
                raise ValueError(f"The checkpoint's cosine-head scale {old_key} = {sigma.flatten().tolist()} is not positive: it was "
                                 "saved by a version whose sigma could go negative, which inverts every score. Retrain the model "
                                 "with this version (sigma is now stored as sigma_raw = inverse softplus and stays positive).")
            state_dict[prefix + "sigma_raw"] = inverse_softplus(sigma)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def cosine(self, features: Tensor) -> Tensor:
        """Cosine similarities to every class weight (B, out_features), without ``sigma``."""
        return nn.functional.linear(nn.functional.normalize(features, dim=1), nn.functional.normalize(self.weight, dim=1))

    def forward(self, features: Tensor) -> Tensor:
        """``sigma`` times the cosine similarities (B, out_features)."""
        return self.sigma * self.cosine(features)


def inverse_softplus(value: Tensor) -> Tensor:
    """``s`` with ``softplus(s) = value`` (value > 0): ``value + log(1 - exp(-value))``."""
    return value + torch.log(-torch.expm1(-value))


class Classifier(nn.Module):
    """Backbone + multi-head classifier (linear, or cosine-normalised for LUCIR).

    Args:
        backbone: Module mapping inputs (B, *input_shape) to features (B, feature_dim).
        feature_dim: Width of the backbone's output.
        n_heads: Number of heads (one per task in the task scenario, else 1).
        n_outputs: Output units per head.
        head: ``"linear"`` (``nn.Linear``) or ``"cosine"`` (:class:`CosineLinear`).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, n_heads: int = 1, n_outputs: int = 10, head: str = "linear") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}.")
        self.backbone = backbone
        self.n_heads = n_heads
        self.n_outputs = n_outputs
        self.head = nn.Linear(feature_dim, n_heads * n_outputs) if head == "linear" else CosineLinear(feature_dim, n_heads * n_outputs)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate representation (B, feature_dim)."""
        return self.backbone(x)

    def heads(self, features: Tensor) -> Tensor:
        """Every head's logits from features: (B, feature_dim) -> (B, H, K)."""
        return self.head(features).view(len(features), self.n_heads, self.n_outputs)

    def all_logits(self, x: Tensor) -> Tensor:
        """Every head's logits (B, H, K)."""
        return self.heads(self.features(x))

    def select(self, logits: Tensor, task_id: Tensor | int | None) -> Tensor:
        """Pick each sample's head from (B, H, K) logits -> (B, K)."""
        if self.n_heads == 1:
            return logits[:, 0]
        if task_id is None:
            raise ValueError("This model has one head per task: pass task_id (the task scenario gives it).")
        if isinstance(task_id, int):
            return logits[:, task_id]
        if bool((task_id == task_id[0]).all()):
            return logits[:, int(task_id[0])]
        return logits[torch.arange(len(logits)), task_id]

    def forward(self, x: Tensor, task_id: Tensor | int | None = None) -> Tensor:
        """Logits of each sample's head (B, K)."""
        return self.select(self.all_logits(x), task_id)


def mlp_backbone(input_shape: Sequence[int], hidden: Sequence[int]) -> tuple[nn.Module, int]:
    """Flatten + (Linear, ReLU) per hidden width."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers), width


def convnet_backbone(input_shape: Sequence[int], width: int = 32) -> tuple[nn.Module, int]:
    """Two blocks of (conv3x3-BN-ReLU, conv3x3-BN-ReLU, max-pool), pooling to 2x2, a dense layer.

    Batch-norm makes a few epochs enough on a CPU budget; teachers run it in eval mode.
    """

    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return conv(c_in, c_out) + conv(c_out, c_out) + [nn.MaxPool2d(2)]

    layers = block(input_shape[0], width) + block(width, 2 * width)
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, 8 * width), nn.ReLU()]
    return nn.Sequential(*layers), 8 * width


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convs with batch-norm and a shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18_backbone(input_shape: Sequence[int], filters: int = 20) -> tuple[nn.Module, int]:
    """Reduced ResNet-18: [2, 2, 2, 2] basic blocks with ``filters * (1, 2, 4, 8)`` channels.

    The split-CIFAR backbone of Lopez-Paz & Ranzato (2017, GEM) with 20 base filters
    (about 1.1 M parameters); 64 filters gives the full-width ResNet-18.
    """
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], filters, 3, 1, 1, bias=False), nn.BatchNorm2d(filters), nn.ReLU()]
    c_in = filters
    for stage, mult in enumerate((1, 2, 4, 8)):
        c_out = filters * mult
        stride = 1 if stage == 0 else 2
        layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), c_in


def parse_spec(spec: str, input_shape: Sequence[int]) -> tuple[str, list[int]]:
    """Split ``"name:a,b"`` into a name and integer arguments; resolve ``auto``."""
    name, _, args = spec.partition(":")
    name = name.strip().lower()
    if name == "auto":
        return ("mlp", [400, 400]) if input_shape[0] == 1 else ("resnet18", [20])
    if name not in MODEL_DESCRIPTIONS:
        raise ValueError(f"Unknown model {name!r}; choose one of: {', '.join(MODEL_DESCRIPTIONS)}.")
    try:
        numbers = [int(a) for a in args.split(",") if a.strip()]
    except ValueError as error:
        raise ValueError(f"Model spec {spec!r}: widths must be integers, e.g. 'mlp:400,400' or 'convnet:32'.") from error
    if any(n < 1 for n in numbers):
        raise ValueError(f"Model spec {spec!r}: widths must be positive.")
    return name, numbers


def initialization_seed(seed: int) -> int:
    """The torch seed a model's weights are drawn with for run seed ``seed``.

    The value :func:`lifelong_kd.pipeline.seed_everything` gives torch before the command line
    builds the model (``seed * 1_000_003``: experience index -1), so ``build_model(..., seed=S)``
    starts from the weights ``lifelong-kd run --seed S`` starts from.

    Raises:
        ValueError: ``seed`` is not an integer from 0 to 2**31 - 1.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**31 - 1:
        raise ValueError(f"seed must be an integer from 0 to 2147483647 (2**31 - 1), got {seed!r}; pass e.g. seed=0.")
    return seed * 1_000_003


def build_model(
    spec: str,
    input_shape: Sequence[int],
    n_heads: int = 1,
    n_outputs: int = 10,
    channels_last: bool = True,
    head: str = "linear",
    seed: int | None = None,
) -> Classifier:
    """Build a :class:`Classifier` from a spec such as ``"mlp:400,400"``.

    Args:
        spec: Model spec (see module docstring and :data:`MODEL_DESCRIPTIONS`).
        input_shape: Shape of one input (C, H, W).
        n_heads: Number of heads.
        n_outputs: Output units per head.
        channels_last: Store convolution weights channels-last (faster CPU convolutions);
            False keeps PyTorch's default NCHW layout. No effect on MLPs.
        head: ``"linear"``, or ``"cosine"`` (LUCIR, Hou et al. 2019): a
            :class:`CosineLinear` head, and the MLP's and ConvNet's final ReLU removed so
            features can be negative (their Sec. 4.1; the ResNet keeps its last ReLU).
        seed: Seed of the initial weights (the weights ``lifelong-kd run --seed SEED``
            starts from, see :func:`initialization_seed`). They are drawn from a forked
            generator: torch's global random state is the same before and after. None
            (default, as ``torch.nn`` modules do) draws from the global generator.
    """
    if seed is None:
        return _build(spec, input_shape, n_heads, n_outputs, channels_last, head)
    torch_seed = initialization_seed(seed)
    with torch.random.fork_rng(devices=()):
        torch.manual_seed(torch_seed)
        return _build(spec, input_shape, n_heads, n_outputs, channels_last, head)


def _build(spec: str, input_shape: Sequence[int], n_heads: int, n_outputs: int, channels_last: bool, head: str) -> Classifier:
    """:func:`build_model` with the weights drawn from torch's global generator."""
    name, numbers = parse_spec(spec, input_shape)
    if name == "mlp":
        backbone, dim = mlp_backbone(input_shape, numbers or [400, 400])
    elif name == "convnet":
        backbone, dim = convnet_backbone(input_shape, *(numbers[:1] or [32]))
    else:
        backbone, dim = resnet18_backbone(input_shape, *(numbers[:1] or [20]))
    if head == "cosine" and isinstance(backbone, nn.Sequential) and isinstance(backbone[-1], nn.ReLU):
        backbone = backbone[:-1]  # no parameters removed: state-dict keys are unchanged
    model = Classifier(backbone, dim, n_heads, n_outputs, head)
    if channels_last and name != "mlp":
        model = model.to(memory_format=torch.channels_last)
    return model


def inference_batch_size(
    model: nn.Module, input_shape: Sequence[int], budget: int = 2**20, smallest: int = 16, largest: int = 1024
) -> int:
    """A fast inference batch size for ``model``: the largest activation of a batch stays near ``budget`` elements.

    Large batches help matmul-bound models (the MLP 784-1000-1000 runs 1.8x faster at 1024
    than at 16), but a convolutional model's activation maps then overflow the CPU caches
    (``convnet:32`` runs 3.6x slower at 1024 than at 32; ``benchmarks/layout_and_batch.py``). One probe forward on a single sample finds
    the widest activation; the batch is the power of two that keeps it near ``budget``.

    Args:
        model: The model (its train/eval mode is restored).
        input_shape: Shape of one input (C, H, W).
        budget: Target number of elements of the largest activation of one batch (4 MB in float32).
        smallest: Lower bound.
        largest: Upper bound.
    """
    widest = 1
    hooks = []

    def record(module: nn.Module, args: tuple, output: object) -> None:
        nonlocal widest
        if isinstance(output, Tensor):
            widest = max(widest, output[0].numel())

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters(), None)
        probe = torch.zeros(1, *input_shape, device=parameter.device if parameter is not None else None)
        with torch.no_grad():
            if isinstance(model, Classifier):
                model.all_logits(probe)
            else:
                model(probe)
    except (TypeError, ValueError, RuntimeError):  # a model that needs more than an input (e.g. task labels)
        return largest
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    batch = 2 ** max(0, math.floor(math.log2(max(budget // widest, 1))))
    return int(min(max(batch, smallest), largest))
