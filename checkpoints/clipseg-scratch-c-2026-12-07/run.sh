#!/usr/bin/env bash
# CLIPSeg from scratch, third order (2026-12-07/08): phrases with frozen towers 40 min, then phrases with the
# vision tower tuned 40 min (no kind stage), then the hard negative at weight 0.1 for 40 min, in 10-minute
# chunks with a validation measurement after each.
set -uo pipefail
cd /work/main
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
d=checkpoints/clipseg-scratch-c-2026-12-07
out=$d/scenes-clipseg
re=".venv/bin/regionedit"
chunk() {  # LABEL [options]
    local label=$1; shift
    $re toyworld train scenes-clipseg --device cpu --out "$out" --minutes 10 --no-evaluate -q \
        $([ -e "$out/card.json" ] && echo --resume) "$@" >>"$d/train.log" 2>&1
    $re bench toymodels "$out" --split validation --json "$d/validation-$label.json" >>"$d/eval.log" 2>&1
    python3 - "$d/validation-$label.json" "$label" >>"$d/curve.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = next(v for k, v in r.items() if isinstance(v, dict) and "mean_iou" in v)
print(sys.argv[2], m["mean_iou"], m["absent_empty_share"], flush=True)
PY
}
for i in 1 2 3 4; do chunk "phrases-$i"; done
for i in 1 2 3 4; do chunk "vision-$i" --tune-vision; done
for i in 1 2 3 4; do chunk "absent01-$i" --tune-vision --absent-weight 0.1; done
echo done >>"$d/curve.txt"
