#!/usr/bin/env bash
# One-GPU benchmark (H100 / H200), under 5 minutes: training steps of every case at batch 64 for the
# CIFAR10-size models (the full 16-16-16 i-DenseNet included), evaluation and sampling per image, the
# parameter counter, FLOPs per step (counted once per operator by torch.utils.flop_counter's formulas)
# and the fraction of the GPU's peak FLOP/s the step reaches. Prints the table; JSON goes to $OUT (or
# ./bench-gpu-out).
#
#   bash bench/gpu_bench.sh            # from the repository root
#   PYTHON=.venv/bin/python OUT=/tmp/x bash bench/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-bench-gpu-out}
mkdir -p "$OUT"

# Dense peaks (dense, no sparsity) by device: FP32 on the CUDA cores and TF32 on the tensor cores.
# cuDNN convolutions use TF32 by default in PyTorch (torch.backends.cudnn.allow_tf32 = True), matmuls do not.
read -r NAME FP32 TF32 < <("$PYTHON" - <<'EOF'
import torch
name = torch.cuda.get_device_name(0)
peaks = {"H200": (67.0, 494.7), "H100 PCIe": (51.2, 378.0), "H100 NVL": (60.0, 417.5), "H100": (67.0, 494.7),
         "A100": (19.5, 156.0)}
fp32, tf32 = next((v for k, v in peaks.items() if k in name), (float("nan"), float("nan")))
print(name.replace(" ", "_"), fp32, tf32)
EOF
)
echo "device $NAME: peak FP32 $FP32 TFLOP/s, TF32 $TF32 TFLOP/s" >&2
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader >&2 || true

# 1) the main table (default layout: contiguous on CUDA), FLOPs counted, fraction of FP32 peak
timeout 250 "$PYTHON" -m bench.run --device cuda --threads 4 --flops --peak-tflops "$FP32" --timeout 90 \
    --cases toy,image111,cifar_small,resflow_small,cifar_full,eval,sample,count \
    --json-out "$OUT/gpu.json" > /dev/null || echo "bench.run: some case failed or timed out (see $OUT/gpu.json)" >&2

# 2) the full model in channels-last, to decide the CUDA default of Flow.memory_format
timeout 60 "$PYTHON" -m bench.run --device cuda --threads 4 --cases cifar_full --repeats 6 --warmup 2 \
    --memory-format channels_last --json-out "$OUT/gpu_channels_last.json" > /dev/null || true

"$PYTHON" - "$OUT" "$TF32" <<'EOF'
import json, sys
from bench.run import format_table
out, tf32 = sys.argv[1], float(sys.argv[2])
main = json.load(open(f"{out}/gpu.json"))
print(format_table(main))
for name, r in main["cases"].items():
    if "tflops_achieved" in r:
        print(f"{name:16s} {r['tflops_achieved']:.2f} TFLOP/s = {100 * r.get('fraction_of_peak', float('nan')):.1f}% "
              f"of FP32 peak, {100 * r['tflops_achieved'] / tf32:.1f}% of TF32 peak")
try:
    cl = json.load(open(f"{out}/gpu_channels_last.json"))["cases"]["cifar_full"]
    base = main["cases"]["cifar_full"]
    print(f"cifar_full channels_last: {cl['median_s']:.3f} s/step vs contiguous {base['median_s']:.3f} s/step")
except (OSError, KeyError) as err:
    print(f"channels_last comparison unavailable ({err})")
EOF
