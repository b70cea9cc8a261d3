#!/usr/bin/env bash
# Every GPU check in one go, for a session that has a CUDA machine (CI never runs this).
#
#   here (CPU):   bash bench/gpu.sh --stage          # copies processed full Diginetica into .gpu-data/
#   there (GPU):  device run, carry [".gpu-data"], command "bash bench/gpu.sh"
#   smoke test:   bash bench/gpu.sh --dry-run [DATA_DIR]   # CPU, 1 s per phase, writes under $OUT or
#                                                         # /tmp/sbrbench-gpu-dry-run (never results/)
#
# 1. the device-parametrised tests (metrics, every model forward/backward, exact resume) on cuda;
# 2. one timed slice of an epoch of SR-GNN, GCE-GNN, CM-GNN, TAGNN, TAGNN++ and TAGNN++ (released
#    code) on full Diginetica (bench/bench_epoch.py: training, evaluation and forward alone), fp32
#    then bf16, written to $OUT (or results/bench) as *-cuda.json;
# 3. SR-GNN's training step against its floor (bench/bench_floor.py), as srgnn-floor-cuda.json.
# --dry-run runs the same Python on the CPU (fp32 only; the bf16 pass needs CUDA) to check that
# every model, option and path still exists; its figures mean nothing.
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
MODELS=${MODELS:-srgnn,gcegnn,cmgnn,tagnn,tagnnpp,tagnnpp-code}
data=.gpu-data/diginetica
if [[ "${1:-}" == "--dry-run" ]]; then
    device=cpu seconds=1 dest=${OUT:-/tmp/sbrbench-gpu-dry-run}
    if [[ -n "${2:-}" ]]; then data=$2; fi
    mkdir -p "$dest"
    echo "dry run on the CPU: $data -> $dest" | tee "$dest/gpu-info.txt"
else
    device=cuda seconds=${SECONDS_PER_MODEL:-20} dest=${OUT:-results/bench}
    mkdir -p "$dest"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$dest/gpu-info.txt"
fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$dest/gpu-info.txt"
$PY -m pytest -q -p no:cacheprovider --device "$device" -k "$device" tests/test_metrics.py tests/test_every_model.py \
    tests/test_train.py 2>&1 | tee "$dest/gpu-tests.txt" | tail -5
$PY bench/bench_epoch.py --data "$data" --device "$device" --models "$MODELS" --seconds "$seconds" --out "$dest"
if [[ "$device" == cpu ]]; then rounds=2 steps=3; else rounds=10 steps=20; fi
$PY bench/bench_floor.py --data "$data" --device "$device" --rounds "$rounds" --steps "$steps" \
    --out "$dest/srgnn-floor-$device.json" > "$dest/srgnn-floor.log"
if [[ "$device" == cuda ]]; then
    mkdir -p "$dest/bf16"
    $PY bench/bench_epoch.py --data "$data" --device cuda --precision bf16 --models "$MODELS" \
        --seconds "$seconds" --out "$dest/bf16" > /dev/null
fi
