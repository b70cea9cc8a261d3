#!/usr/bin/env bash
# Table rows that take hours on this project's 2-core CPU, run on a CUDA machine in one go: each
# ITEM is `sbrbench reproduce TABLE --budget $BUDGET --datasets DATASET --rows ROW` (every seed of
# the budget), its run records written without checkpoints. CI never runs this.
#
#   here (CPU):  bash bench/gpu-rows.sh --stage [ITEM ...]   # the processed datasets into .gpu-data/
#   there (GPU): device run, carry [".gpu-data"], command "bash bench/gpu-rows.sh [ITEM ...]"
#   back here:   cp -rn FILES_AT/rows/runs/* "$SBRBENCH_RESULTS_DIR/runs/", then the usual
#                `sbrbench reproduce TABLE --budget reduced ...` reuses them beside the CPU rows
#   smoke test:  bash bench/gpu-rows.sh --dry-run [ITEM ...] # CPU, the ci budget, under $OUT or /tmp
#
# ITEM = TABLE:DATASET:ROW. Without items: the rows the open issues still miss, the costliest on a
# CPU first (TAGNN family ≈ 1–3 h per row and dataset, GCE-GNN / CM-GNN ≈ 1 h). The items share
# DEADLINE_S seconds (default 720): each runs under what is left, stopped by SIGTERM at the
# deadline (its record then says interrupted; the others are complete).
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_ITEMS=(
    tagnnpp-table2:diginetica:tagnn tagnnpp-table2:diginetica:tagnnpp tagnnpp-table2:diginetica:tagnnpp-code
    cmgnn:diginetica:gcegnn cmgnn:diginetica:cmgnn cmgnn:diginetica:srgnn
)
mode=run
case "${1:-}" in
    --stage|--dry-run) mode=${1#--}; shift ;;
    -*) echo "usage: bash bench/gpu-rows.sh [--stage | --dry-run] [TABLE:DATASET:ROW ...]" >&2; exit 2 ;;
esac
items=("$@")
[[ ${#items[@]} -gt 0 ]] || items=("${DEFAULT_ITEMS[@]}")
for it in "${items[@]}"; do
    [[ $it =~ ^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+:[A-Za-z0-9_.+-]+$ ]] || {
        echo "bad item '$it': expected TABLE:DATASET:ROW, e.g. macl:macl-grocery:macl-code" >&2; exit 2; }
done
PY=${PYTHON:-python3}
[[ -z ${PYTHON:-} && -x .venv/bin/python ]] && PY=.venv/bin/python  # here; the GPU machine has its own
export PYTHONPATH=src PYTHONUNBUFFERED=1
data=.gpu-data
if [[ $mode == stage ]]; then
    # the processed directory of each item's dataset under its table's protocol (checks the names too)
    $PY - "${items[@]}" <<'EOF' | while read -r src rel; do mkdir -p "$data/processed/$rel"; cp "$src"/manifest.json "$src"/arrays.npz "$data/processed/$rel/"; done
import sys
from sbrbench.errors import SbrError
from sbrbench.reproduce import TABLES
from sbrbench.data.store import processed_location
try:
    for item in dict.fromkeys(sys.argv[1:]):
        table, dataset, row = item.split(":")
        spec = TABLES.get(table)
        if dataset not in spec.datasets:
            raise SbrError(f"{table} has no dataset {dataset!r}; it has: {', '.join(spec.datasets)}")
        if row not in [e.label for e in spec.entries()]:
            raise SbrError(f"{table} has no row {row!r}; it has: {', '.join(e.label for e in spec.entries())}")
        src = processed_location(dataset, spec.protocol)
        print(src, f"{dataset}/{src.name}")
except SbrError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
EOF
    [[ ${PIPESTATUS[0]} -eq 0 ]] || exit 2
    grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
    du -sh "$data"; exit 0
fi
if [[ $mode == dry-run ]]; then
    device=cpu budget=ci dest=${OUT:-/tmp/sbrbench-gpu-rows-dry-run} deadline=${DEADLINE_S:-3600}
else
    device=cuda:0 budget=${BUDGET:-reduced} dest=${OUT:-/tmp/sbrbench-gpu-rows} deadline=${DEADLINE_S:-720}
    command -v nvidia-smi >/dev/null || { echo "no CUDA machine here (nvidia-smi missing): use --dry-run" >&2; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
[[ -d $data/processed ]] || { echo "no staged data in $data: run bash bench/gpu-rows.sh --stage first" >&2; exit 1; }
mkdir -p "$dest/rows"
end=$((SECONDS + deadline))
status=0
for it in "${items[@]}"; do
    IFS=: read -r table dataset row <<< "$it"
    left=$((end - SECONDS))
    if (( left < 30 )); then echo "$it: not started (deadline)"; status=3; continue; fi
    t0=$SECONDS
    rc=0
    timeout --signal=TERM --kill-after=60 "$left" $PY -m sbrbench reproduce "$table" --budget "$budget" \
        --datasets "$dataset" --rows "$row" --device "$device" --data-dir "$data" --results-dir "$dest/rows" \
        >> "$dest/rows.log" 2>&1 || rc=$?
    find "$dest/rows/runs" -type d -name checkpoint -prune -exec rm -rf {} + 2>/dev/null || true
    echo "$it: rc $rc, $((SECONDS - t0)) s"
    (( rc == 0 )) || status=3
done
tail -3 "$dest/rows.log"
exit $status
