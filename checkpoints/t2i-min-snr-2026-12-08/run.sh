#!/usr/bin/env bash
# scenes-t2i from scratch with min-SNR-γ 5 (v-prediction), otherwise the documented recipe (lr 1e-3, batch 64,
# pool 8192 refreshed every 8 steps), to 5,471 steps: the step of the uniform-loss baseline's validation point 0.33
# (bench/results/toymodels-t2i-validation-cpu.json, note).
set -uo pipefail
cd /work/main
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
d=checkpoints/t2i-min-snr-2026-12-08
.venv/bin/regionedit toyworld train scenes-t2i --device cpu --out "$d/scenes-t2i" --steps 5471 --minutes 115 \
    --pool 8192 --refresh-every 8 --min-snr-gamma 5 --no-evaluate >>"$d/train.log" 2>&1
.venv/bin/regionedit bench toymodels "$d/scenes-t2i" --split validation --n 128 --json "$d/validation.json" >>"$d/eval.log" 2>&1
echo done >>"$d/train.log"
