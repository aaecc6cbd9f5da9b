#!/usr/bin/env bash
# The GPU check of issue 18, for one machine with one CUDA GPU (about ten minutes):
#   1. the image-scale throughput tables on cuda (vmapped MAML meta-batch 32 on Conv-4 beside a per-task loop,
#      ProtoNet, peak CUDA memory), benchmarks/image_throughput.py --device cuda;
#   2. a search with gpus_per_trial: 0.25, four trials at once on the one GPU (needs Ray, Optuna and MLflow).
# On a machine with no registry, prepare the wheels here first (pydantic, higher; Ray's wheel is larger than
# what travels, so step 2 runs only where metaopt's dependencies are installed):
#   pip download --dest benchmarks/.wheels --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 pydantic higher==0.2.1
#   bash benchmarks/gpu_check.sh [OUT]
set -euo pipefail
out=${1:-${OUT:-benchmarks/results}}
mkdir -p "$out"
python=${PYTHON:-python3}
if [ -d benchmarks/.wheels ]; then
    "$python" -m pip install --quiet --no-index --find-links benchmarks/.wheels pydantic higher
fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())"
"$python" benchmarks/image_throughput.py --device cuda --iterations 30 --resnet-iterations 5 \
    --json "$out/image_throughput_cuda.json" 2>&1 | tee "$out/image_throughput_cuda.txt"
if "$python" -c "import ray, optuna, mlflow" 2>/dev/null; then
    work=$(mktemp -d)
    sed -e 's/^name: .*/name: glyphs-gpu-quarter/' -e "s#^search_space: .*#search_space: $PWD/search_spaces/glyphs.yaml#" \
        -e 's/^resources: .*/resources: {cpus_per_trial: 1, gpus_per_trial: 0.25, max_concurrent: 4}/' \
        -e 's/^  trials: .*/  trials: 8/' jobs/glyphs-5w1s.yaml > "$work/job.yaml"
    "$python" -m metaopt.cli search "$work/job.yaml" --workdir "$work" --tracking-uri "sqlite:///$work/mlflow.db" \
        2>&1 | tee "$out/gpu_quarter_search.txt"
else
    echo "skipped the gpus_per_trial search: Ray, Optuna or MLflow is not installed here" | tee "$out/gpu_quarter_search.txt"
fi
