#!/usr/bin/env bash
# GPU check (issue #15): on a CUDA host, in under 8 minutes, run the engine tests and
# bench/serve.py in bfloat16 and float16 at batch 64, and print GPU memory use: each run's peak
# allocation (torch.cuda.max_memory_allocated, printed by serve.py) and, if nvidia-smi is here,
# the highest memory.used it saw while the runs went on. Refuses (exit 2) without CUDA.
#
# Usage: bench/gpu_check.sh        (PYTHON=... to choose the interpreter; default .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check.sh: no CUDA device (torch.cuda.is_available() is False): this check runs only on a GPU host" >&2
    exit 2
fi
"$PYTHON" -c 'import torch; print("GPU:", torch.cuda.get_device_name(), "| torch", torch.__version__)'

# nvidia-smi samples the whole device every half second, in the background, until the end.
SAMPLES=$(mktemp)
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits -lms 500 >"$SAMPLES" &
    SAMPLER=$!
    trap 'kill "$SAMPLER" 2>/dev/null; rm -f "$SAMPLES"' EXIT
fi

echo "== engine tests"
INKWELL_ENV=test timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider -p no:django tests/engine

# Short requests, many of them, arriving fast: the batch fills to 64. Split timing left out.
for dtype in bfloat16 float16; do
    echo "== bench/serve.py, $dtype, batch 64"
    timeout 130 "$PYTHON" bench/serve.py --device cuda --dtype "$dtype" --max-batch 64 \
        --quick --requests 192 --rates 64 --skip-split
done

if [ -n "${SAMPLER:-}" ]; then
    sort -t, -k1 -n "$SAMPLES" | tail -1 | awk -F', ' '{print "nvidia-smi: highest memory.used " $1 " MiB of " $2 " MiB"}'
fi
echo "gpu_check.sh: done in ${SECONDS}s"
