import cProfile, pstats, sys
sys.path.insert(0, ".")
import torch; torch.set_num_threads(1)
from tests.test_compression_run import _run, _stream
s = _stream()
cProfile.run("_run(s)", "/work/main/benchmarks/output/compression_scratch/prof.out")
pstats.Stats("/work/main/benchmarks/output/compression_scratch/prof.out").sort_stats("cumulative").print_stats(25)
