#!/usr/bin/env bash
# The GPU speed figures that issues 2, 5 and 7 ask for, in one go (needs a CUDA GPU; each benchmark
# builds random models of the real sizes, then times them). Each writes its JSON, with the machine:
#   bench/run_gpu_benchmarks.sh [OUT_DIR]        # default: bench/results
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out="${1:-bench/results}"
mkdir -p "$out"
tag="$(python3 -c 'import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())')"
bench() { timeout "${BENCH_TIMEOUT:-300}" python3 -m regionedit.cli bench "$@" -q || echo "bench $1 failed or timed out"; }
bench inversion --device cuda --json "$out/inversion-sd15-${tag}.json"       # SD-1.5-sized, 512², 100 steps
bench discover --device cuda --json "$out/discover-celebahq256-${tag}.json"  # 3 RBE directions, DDPM-256-sized
bench zone --device cuda --json "$out/zone-sd15-samh-${tag}.json"            # 2 IP2P UNets + SAM ViT-H, 512², 20 steps
