#!/usr/bin/env bash
# Run van de Ven et al.'s own code (GMvandeVen/continual-learning) at a given commit on this machine,
# for a side-by-side check of our LwF variants (docs/results.md, van de Ven notes).
#
#   bash benchmarks/vandeven2019_authors_code.sh CLONE COMMIT [main.py options...]
#   bash benchmarks/vandeven2019_authors_code.sh ../continual-learning 5ebc600 \
#       --experiment=permMNIST --scenario=domain --tasks=3 --iters 5000 --lr 0.0001 --fc-units 1000 --replay=current --distill
#
# CLONE is a git clone of the authors' repository (not part of this project). The commit's files are
# exported to a temporary folder and changed only where torch 2 needs it: reduction='elementwise_mean'
# (removed from torch) becomes 'mean', the same computation; visdom, imported but not used without
# --visdom, is replaced by an empty stand-in. MNIST is read from DATA (default ../shared/data), no download.
set -euo pipefail
CLONE=$1; COMMIT=$2; shift 2
DATA=${DATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
git -C "$CLONE" archive "$COMMIT" | tar -x -C "$WORK"
sed -i "s/'elementwise_mean'/'mean'/g" "$WORK"/*.py
mkdir -p "$WORK/stub" "$WORK/data/mnist"
printf 'class Visdom:\n    def __init__(self, *args, **kwargs):\n        pass\n' > "$WORK/stub/visdom.py"
ln -s "$(cd "$DATA" && pwd)/MNIST" "$WORK/data/mnist/MNIST"
cd "$WORK"
PYTHONPATH=stub OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} python main.py --data-dir "$WORK/data" --no-gpus "$@" 2>&1 | tr '\r' '\n' | grep -v "SOLVER"
