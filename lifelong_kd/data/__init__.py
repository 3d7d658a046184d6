"""Data: streams of experiences held as tensors, benchmark builders, sources, corruptions."""

from lifelong_kd.data.benchmarks import BENCHMARKS, StreamOptions, build_stream
from lifelong_kd.data.sources import DataNotFoundError
from lifelong_kd.data.stream import Batch, BatchTransform, Experience, Split, Stream

__all__ = ["BENCHMARKS", "Batch", "BatchTransform", "DataNotFoundError", "Experience", "Split", "Stream", "StreamOptions", "build_stream"]
