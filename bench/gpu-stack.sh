#!/bin/sh
# The prepared GPU check of stacked training, for one CUDA device (at most 8.5 minutes: each
# part has its own time limit, so that the whole fits one 10-minute device call).
# From the repository root:
#
#     sh bench/gpu-stack.sh [FOLDER]     # the tables also go to FOLDER (default: $OUT or bench)
#
# 1. picture-steps/s against M = 1, 8, 64, 256 with the real stacked trainer, the drawing part
#    of a step, MB per picture, the stack size `--stack auto` picks;
# 2. end to end: 64 distinct pictures (imgs/, the toy targets, words) x 13,000 steps each (what
#    the default config makes in 3 minutes on one CPU core), stacked as auto picks: the wall
#    time in all; each picture's kl, next to a solo run of the same steps for the first;
# 3. one `flowgif batch --stack auto` of imgs/ (train, render, eval, gallery) as users run it.
set -eu
out=${1:-${OUT:-bench}}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), torch.__version__)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 120 python3 bench/stack.py --device cuda --stacks 1 8 64 256 --steps 30 || true
timeout 330 python3 bench/stack.py --device cuda --end-to-end 64 --e2e-steps 13000 --solo 1 \
    --nll 2000 || true
start=$(date +%s)
timeout 60 python3 -m flowgif batch imgs --out /tmp/stack-batch --steps 1000 --stack auto \
    --render-args "--frames 40 --particles 8000" || true
echo "batch imgs --steps 1000 --stack auto: $(( $(date +%s) - start )) s"
mkdir -p "$out"
[ "$out" = bench ] || cp bench/STACK-gpu.md "$out/" || true
