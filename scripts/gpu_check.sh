#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: the GPU tests, the smoke test a CI runner would run,
# the rehearsal lane, a real-shaped (Wan2.1-VACE-1.3B config, random weights) edit, and the
# engine and kernel benchmarks at the 1.3B width. Everything lands in one folder with a report.
#
#   bash scripts/gpu_check.sh [OUT]        # default OUT: runs/gpu_check
#
# Needs the project installed with a CUDA build of torch (pip install torch; pip install -e '.[test]').
# Each step's exit status and its log are in OUT; the report lists them, and the script exits
# non-zero when any step failed (the later steps still run).
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:-runs/gpu_check}
mkdir -p "$out"
report="$out/report.md"
failed=0

python - <<'PY' || { echo "gpu_check: torch sees no CUDA device; run this on a GPU machine" >&2; exit 2; }
import torch
raise SystemExit(0 if torch.cuda.is_available() else 1)
PY

step() {  # step NAME COMMAND...: run, log, record the status and wall time
    local name=$1; shift
    local start=$SECONDS
    echo "== $name: $*" >&2
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    local took=$((SECONDS - start))
    [ $rc -eq 0 ] || failed=1
    printf '| %s | %s | %s s | `%s` |\n' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED ($rc)")" "$took" "$*" >>"$report"
}

{
    echo "# GPU check"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi not found"
    python -c "import torch, diffusers, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| diffusers', diffusers.__version__, '| triton', triton.__version__)"
    git rev-parse --short HEAD 2>/dev/null
    echo '```'
    echo
    echo "| step | result | wall | command |"
    echo "|---|---|---|---|"
} >"$report"

step gpu-tests python -m pytest -q -m gpu tests
step selftest hetcache selftest --device cuda --json
step rehearsal python -m pytest -q -m rehearsal tests
step real-shaped-model python scripts/make_real_shaped_model.py "$out/wan13b-random"
step real-shaped-edit hetcache bench assets/demo/input.mp4 --mask assets/demo/mask.png --prompt "a red ball" \
    --model "$out/wan13b-random" --device cuda --dtype bfloat16 --steps 20 --frames 33 --width 832 --height 480 \
    --methods none,hetcache:quality,hetcache:balanced,hetcache:fast,teacache:fast --out "$out/bench-real-shaped" --json
step bench-kernels python scripts/bench_kernels.py --device cuda --dtype bfloat16 --json "$out/bench_kernels.json"
step bench-engine python scripts/bench_engine.py --arch 1.3b --full-depth --frames 33 --height 480 --width 832 \
    --device cuda --dtype bfloat16 --cfg --steps 50 --threads 16 --json "$out/bench_engine.json"

{
    echo
    for name in bench-kernels bench-engine; do
        echo "## $name"
        echo '```'
        tail -n 30 "$out/$name.log"
        echo '```'
    done
    echo "## real-shaped bench"
    [ -f "$out/bench-real-shaped/bench.md" ] && cat "$out/bench-real-shaped/bench.md"
} >>"$report"
rm -rf "$out/wan13b-random"  # 4.3 GB of random weights: rebuilt in a minute when needed

echo "report: $report" >&2
exit $failed
