#!/usr/bin/env bash
# The released-code MACL rows (`macl-code`) of `sbrbench reproduce macl --budget reduced` on a CUDA
# machine: 3 datasets x 5 seeds x 3 epochs. On this project's 2-core CPU one such run takes ~40 min
# (item-level CL over every item at every step: ~1.4 s per step of 50 in epoch 1, ~1 s after, at load 3),
# on a GPU about a minute. CI never runs this.
#
#   here (CPU):  bash bench/gpu-macl.sh --stage        # copies the processed MACL datasets into .gpu-data/
#   there (GPU): device run, carry [".gpu-data"], command "bash bench/gpu-macl.sh"
#   back here:   cp -r FILES_AT/macl/runs/* "$SBRBENCH_RESULTS_DIR/runs/" and run
#                `sbrbench reproduce macl --budget reduced`: it reuses these rows beside the CPU ones
#   smoke test:  bash bench/gpu-macl.sh --dry-run      # CPU, the ci budget, under $OUT or /tmp
#
# Run records come back without checkpoints (they are not results; ~100 MB per run).
set -euo pipefail
cd "$(dirname "$0")/.."
DATASETS=(macl-cellphones macl-grocery macl-instacart)
case "${1:-}" in
    ""|--stage|--dry-run) ;;
    *) echo "usage: bash bench/gpu-macl.sh [--stage | --dry-run]" >&2; exit 2 ;;
esac
if [[ "${1:-}" == "--stage" ]]; then
    for d in "${DATASETS[@]}"; do
        src=$(PYTHONPATH=src python3 -c "from sbrbench.data.store import processed_location as p; print(p('$d', 'macl'))")
        mkdir -p ".gpu-data/processed/$d/macl" && cp "$src"/manifest.json "$src"/arrays.npz ".gpu-data/processed/$d/macl/"
    done
    grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
    du -sh .gpu-data; exit 0
fi
PY=${PYTHON:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1
data=.gpu-data
if [[ "${1:-}" == "--dry-run" ]]; then
    device=cpu budget=ci dest=${OUT:-/tmp/sbrbench-gpu-macl-dry-run}
else
    device=cuda:0 budget=${BUDGET:-reduced} dest=${OUT:-/tmp/sbrbench-gpu-macl}
    command -v nvidia-smi >/dev/null || { echo "no CUDA machine here (nvidia-smi missing): use --dry-run" >&2; exit 1; }
    [[ -d $data/processed ]] || { echo "no staged data in $data: run bash bench/gpu-macl.sh --stage first" >&2; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
mkdir -p "$dest/macl"
$PY -m sbrbench reproduce macl --budget "$budget" --rows macl-code --device "$device" \
    --data-dir "$data" --results-dir "$dest/macl" > "$dest/macl.log" 2>&1 || { tail -20 "$dest/macl.log"; exit 1; }
find "$dest/macl/runs" -type d -name checkpoint -prune -exec rm -rf {} +
grep -E "^\| macl-" "$dest/macl/reproduce/macl.md" | grep "macl-code" || true
tail -3 "$dest/macl.log"
