#!/usr/bin/env bash
# The GPU figures that issues 2, 5 and 7 ask for, in one go (needs a CUDA GPU; about 10 minutes on
# an H100). Each writes its JSON, with the machine, under bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
tag="${1:-$(python -c 'import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())')}"
regionedit bench inversion --device cuda --json "bench/results/inversion-sd15-${tag}.json" -q   # SD-1.5-sized, 512², 100 steps
regionedit bench discover --device cuda --json "bench/results/discover-celebahq256-${tag}.json" -q  # 3 RBE directions
regionedit bench zone --device cuda --json "bench/results/zone-sd15-samh-${tag}.json" -q          # 2 IP2P UNets + SAM ViT-H, 512², 20 steps
python -m pytest -m slow tests/test_bench_and_demo.py -q                                            # the ≥ 3× inversion bar
