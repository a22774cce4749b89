#!/bin/sh
# The prepared GPU check of stacked training, for one CUDA device (about 6 minutes on an
# H100-class GPU; run it with a 9-minute limit so that a rerun still fits a 15-minute lease).
# From the repository root:
#
#     sh bench/gpu-stack.sh [FOLDER]     # the tables also go to FOLDER (default: $OUT or bench)
#
# 1. picture-steps/s against M = 1, 8, 64, 256 with the real stacked trainer, the drawing part
#    of a step, MB per picture, the stack size `--stack auto` picks;
# 2. end to end: 64 distinct pictures (imgs/, the toy targets, words) x 13,000 steps each (what
#    the default config makes in 3 minutes on one CPU core), stacked as auto picks: the wall
#    time in all; each picture's kl, next to solo runs of the same steps for the first two;
# 3. one `flowgif batch --stack auto` of imgs/ (train, render, eval, gallery) as users run it.
set -eu
out=${1:-${OUT:-bench}}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), torch.__version__)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 150 python3 bench/stack.py --device cuda --stacks 1 8 64 256 --steps 30
timeout 300 python3 bench/stack.py --device cuda --end-to-end 64 --e2e-steps 13000 --solo 2
start=$(date +%s)
timeout 120 python3 -m flowgif batch imgs --out /tmp/stack-batch --steps 2000 --stack auto \
    --render-args "--frames 40 --particles 8000" || true
echo "batch imgs --steps 2000 --stack auto: $(( $(date +%s) - start )) s"
mkdir -p "$out"
[ "$out" = bench ] || cp bench/STACK-gpu.md "$out/"
