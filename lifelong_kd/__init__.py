"""lifelong_kd: continual (lifelong) learning with knowledge distillation.

Public API::

    from lifelong_kd import build_stream, StreamOptions, build_model, LwF, Evaluator, TrainConfig, run

Importing the package is cheap: each name below is imported from its module the first time it
is used (PEP 562 ``__getattr__``), so ``import lifelong_kd`` loads neither torch nor any optional
dependency, and the command line can set the OpenMP environment before torch loads
(:mod:`lifelong_kd.threads`). ``from lifelong_kd import run`` imports what ``run`` needs.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from lifelong_kd.version import __version__

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports each name on first use
    from lifelong_kd.data import Batch, Experience, Split, Stream, StreamOptions, build_stream
    from lifelong_kd.evaluation import EvalReport, Evaluator
    from lifelong_kd.loggers import JsonlLogger
    from lifelong_kd.models import Classifier, build_model
    from lifelong_kd.pipeline import run, seed_everything
    from lifelong_kd.strategies import BiC, Compress, DER, DERpp, ER, EWC, Finetune, ICaRL, Joint, LUCIR, LwF, ModelOutput, MultiTeacher, Strategy
    from lifelong_kd.teacher import freeze_copy
    from lifelong_kd.train import TrainConfig

# Public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(("Batch", "Experience", "Split", "Stream", "StreamOptions", "build_stream"), "lifelong_kd.data"),
    **dict.fromkeys(("EvalReport", "Evaluator"), "lifelong_kd.evaluation"),
    "JsonlLogger": "lifelong_kd.loggers",
    **dict.fromkeys(("Classifier", "build_model"), "lifelong_kd.models"),
    **dict.fromkeys(("run", "seed_everything"), "lifelong_kd.pipeline"),
    **dict.fromkeys(
        ("BiC", "Compress", "DER", "DERpp", "ER", "EWC", "Finetune", "ICaRL", "Joint", "LUCIR", "LwF", "ModelOutput", "MultiTeacher", "Strategy"),
        "lifelong_kd.strategies",
    ),
    "freeze_copy": "lifelong_kd.teacher",
    "TrainConfig": "lifelong_kd.train",
}

__all__ = [
    "LUCIR",
    "ICaRL",
    "ER",
    "DERpp",
    "DER",
    "BiC",
    "Batch",
    "Classifier",
    "Compress",
    "EWC",
    "EvalReport",
    "Evaluator",
    "Experience",
    "Finetune",
    "Joint",
    "JsonlLogger",
    "LwF",
    "ModelOutput",
    "MultiTeacher",
    "Split",
    "Stream",
    "StreamOptions",
    "Strategy",
    "TrainConfig",
    "__version__",
    "build_model",
    "build_stream",
    "freeze_copy",
    "run",
    "seed_everything",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then cached in the package's namespace), or a submodule."""
    module = _EXPORTS.get(name)
    if module is None:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")  # a submodule, as `lifelong_kd.pipeline` after `import lifelong_kd`
        raise AttributeError(f"module 'lifelong_kd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
