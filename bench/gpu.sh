#!/usr/bin/env bash
# Every GPU check in one go, for a session that has a CUDA machine (CI never runs this).
#
#   here (CPU):   bash bench/gpu.sh --stage          # copies processed full Diginetica into .gpu-data/
#   there (GPU):  device run, carry [".gpu-data"], command "bash bench/gpu.sh"
#
# 1. the device-parametrised tests (metrics, every model forward/backward, exact resume) on cuda;
# 2. one timed slice of an epoch of SR-GNN, GCE-GNN, CM-GNN, TAGNN and TAGNN++ on full Diginetica
#    (bench/bench_epoch.py), fp32 then bf16, written to $OUT (or results/bench) as *-cuda.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--stage" ]]; then
    src=$(PYTHONPATH=src python3 -c "from sbrbench.data.store import processed_location as p; print(p('diginetica'))")
    rm -rf .gpu-data && mkdir -p .gpu-data/diginetica && cp "$src"/manifest.json "$src"/arrays.npz .gpu-data/diginetica/
    grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
    du -sh .gpu-data; exit 0
fi
PY=${PYTHON:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1 SBRBENCH_DATA_DIR=${SBRBENCH_DATA_DIR:-/tmp/sbrdata}
dest=${OUT:-results/bench}
mkdir -p "$dest"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$dest/gpu-info.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$dest/gpu-info.txt"
$PY -m pytest -q -p no:cacheprovider --device cuda -k cuda tests/test_metrics.py tests/test_every_model.py \
    tests/test_train.py 2>&1 | tee "$dest/gpu-tests.txt" | tail -5
$PY bench/bench_epoch.py --data .gpu-data/diginetica --device cuda --seconds "${SECONDS_PER_MODEL:-20}" --out "$dest"
mkdir -p "$dest/bf16"
$PY bench/bench_epoch.py --data .gpu-data/diginetica --device cuda --precision bf16 \
    --seconds "${SECONDS_PER_MODEL:-20}" --out "$dest/bf16" > /dev/null
