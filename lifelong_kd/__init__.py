"""lifelong_kd: continual (lifelong) learning with knowledge distillation.

Public API::

    from lifelong_kd import build_stream, StreamOptions, build_model, LwF, Evaluator, TrainConfig, run
"""

from lifelong_kd.data import Batch, Experience, Split, Stream, StreamOptions, build_stream
from lifelong_kd.evaluation import EvalReport, Evaluator
from lifelong_kd.loggers import JsonlLogger
from lifelong_kd.models import Classifier, build_model
from lifelong_kd.pipeline import run, seed_everything
from lifelong_kd.strategies import BiC, Compress, DER, DERpp, ER, EWC, Finetune, ICaRL, Joint, LUCIR, LwF, ModelOutput, MultiTeacher, Strategy
from lifelong_kd.teacher import freeze_copy
from lifelong_kd.train import TrainConfig
from lifelong_kd.version import __version__


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
