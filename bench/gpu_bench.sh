#!/usr/bin/env bash
# One-GPU benchmark (H100 / H200), about 10 minutes (each part has its own timeout): training
# steps of every case at batch 64 for the CIFAR10-size models (the full 16-16-16 i-DenseNet
# included), evaluation and sampling per image, the parameter counter, FLOPs per step (counted
# once per operator by torch.utils.flop_counter's formulas) and the fraction of the GPU's peak
# FLOP/s the step reaches. Prints the table; JSON goes to $OUT (or ./bench-gpu-out).
#
# Then TF32 and bfloat16-autocast rows of the CIFAR10 models (labelled: not the same maths), and the
# side-by-side table against the authors' step on the GPU when their work tree is at $REF_IDENSENET
# (default .ref-idensenet, an ignored folder: carry it to the device machine) and the harness at
# $IDN_HARNESS (default ../shared/reference/harness, or shared/reference/harness). Last, the data
# loader's images/s against the full model's step (bench.data_scaling).
#
# Last, issue 27's rows: the fused training step (train config fused: true) of the training cases, and
# evaluation and sampling with every block's g compiled, then the same with CUDA graphs (torch.compile's
# reduce-overhead mode), and the fused side by side against the authors.
#
#   bash bench/gpu_bench.sh            # from the repository root
#   PYTHON=.venv/bin/python OUT=/tmp/x bash bench/gpu_bench.sh
#   ONLY=main,fused bash bench/gpu_bench.sh   # some parts only: main, precision, side, data, fused
set -euo pipefail
want() { [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]; }
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

if want main; then
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

fi

if want precision; then
# 3) labelled precision variants of the CIFAR10 models (fp32 above is strict: cuDNN TF32 off)
for P in tf32 bf16; do
  timeout 90 "$PYTHON" -m bench.run --device cuda --threads 4 --precision "$P" --cases cifar_small,cifar_full \
      --timeout 40 --json-out "$OUT/gpu_$P.json" > /dev/null || echo "precision $P: failed or timed out" >&2
done
"$PYTHON" - "$OUT" <<'EOF'
import json, sys
for p in ("tf32", "bf16"):
    try:
        cases = json.load(open(f"{sys.argv[1]}/gpu_{p}.json"))["cases"]
    except (OSError, KeyError, ValueError):
        continue
    for name, r in cases.items():
        if "median_s" in r:
            print(f"{name:12s} [{p}] {r['median_s']:.4f} s/step, {r.get('images_per_s', float('nan')):.1f} images/s")
EOF

fi

# 4) side by side with the authors' step on the GPU (strict fp32 on both sides, 3 alternating rounds)
REF=${REF_IDENSENET:-.ref-idensenet}
HARNESS=${IDN_HARNESS:-$( [ -d ../shared/reference/harness ] && echo ../shared/reference/harness || echo shared/reference/harness )}
if ! want side; then
  :
elif [ -f "$REF/train_img.py" ] && [ -f "$HARNESS/time_img.py" ]; then
  timeout 300 "$PYTHON" -m bench.side_by_side --ref "$REF" --harness "$HARNESS" --device cuda --threads 4 \
      --rounds 3 --json-out "$OUT/side_by_side.json" > /dev/null \
      || echo "side-by-side: failed or timed out (partial results in $OUT/side_by_side.json)" >&2
  "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); [print(f'side-by-side {c}: authors/ours median {v[\"ratio_median\"]:.2f} ({v[\"ratio_min\"]:.2f}-{v[\"ratio_max\"]:.2f}), peak MB {v[\"peak_mb\"]}') for c, v in d['cases'].items()]" "$OUT/side_by_side.json" || true
else
  echo "side-by-side skipped: no authors' tree at $REF or no harness at $HARNESS" >&2
fi

if want data; then
# 5) the data loader against the step on the GPU (issue 26): rank 0 of 4's loader over the page cache
#    and cold, 0 and 2 loader processes, against the full CIFAR10 model's step at 16 and 64 per GPU
timeout 150 "$PYTHON" -m bench.data_scaling --device cuda --step-case cifar_full --images 64000 --ranks 1 \
    --batch 16,64 --loader-workers 0,2 > "$OUT/data_scaling.json" || echo "data scaling: failed or timed out" >&2
"$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); [print(f'loader batch {r[\"batch\"]}, {r[\"loader_workers\"]} workers: {r[\"loader_images_per_s\"]:,.0f} images/s, step {r[\"step_images_per_s\"]:.1f} images/s, ratio {r[\"loader_over_step\"]:,.0f}') for r in d['throughput']]" "$OUT/data_scaling.json" || true
fi

if want fused; then
# 6) issue 27: the fused step of the training cases (against part 1's eager rows); evaluation and sampling
#    with every block's g compiled, then with CUDA graphs; the fused side by side
timeout 200 "$PYTHON" -m bench.run --device cuda --threads 4 --fused --timeout 90 \
    --cases toy,image111,cifar_small,cifar_full --json-out "$OUT/gpu_fused.json" > /dev/null \
    || echo "fused training: some case failed or timed out (see $OUT/gpu_fused.json)" >&2
for V in compiled cudagraphs; do
  FLAGS="--compile on"; [ "$V" = cudagraphs ] && FLAGS="--compile on --cuda-graphs"
  timeout 150 "$PYTHON" -m bench.run --device cuda --threads 4 $FLAGS --timeout 70 --cases eval,sample \
      --json-out "$OUT/gpu_$V.json" > /dev/null || echo "$V evaluation/sampling: failed or timed out" >&2
done
"$PYTHON" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
def cases(name):
    try:
        return json.load(open(f"{out}/{name}.json"))["cases"]
    except (OSError, KeyError, ValueError):
        return {}
main = cases("gpu")
if not main:
    print(f"no eager rows in {out}/gpu.json to compare with: run part 1 (main) first or with it")
for variant in ("gpu_fused", "gpu_compiled", "gpu_cudagraphs"):
    for name, r in cases(variant).items():
        base = main.get(name, {})
        if "error" in r:
            print(f"{name:12s} [{variant[4:]}] failed: {r['error']}")
        elif "median_s" in r and "median_s" in base:
            extra = f", compiling {r['compile_s']:.0f} s" if "compile_s" in r else ""
            print(f"{name:12s} [{variant[4:]}] {r['median_s']:.4f} s against eager {base['median_s']:.4f} s: "
                  f"{base['median_s'] / r['median_s']:.2f}x, peak {r.get('peak_mb')} vs {base.get('peak_mb')} MB{extra}")
EOF
if [ -f "$REF/train_img.py" ] && [ -f "$HARNESS/time_img.py" ]; then
  timeout 300 "$PYTHON" -m bench.side_by_side --ref "$REF" --harness "$HARNESS" --device cuda --threads 4 \
      --rounds 3 --fused --json-out "$OUT/side_by_side_fused.json" > /dev/null \
      || echo "fused side-by-side: failed or timed out" >&2
  "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); [print(f'fused side-by-side {c}: authors/ours median {v[\"fused_ratio_median\"]:.2f} ({v[\"fused_ratio_min\"]:.2f}-{v[\"fused_ratio_max\"]:.2f}), peak MB {v[\"peak_mb\"]}') for c, v in d['cases'].items()]" "$OUT/side_by_side_fused.json" || true
fi
fi
