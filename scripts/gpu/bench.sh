#!/usr/bin/env bash
# The real-GPU measurements of BENCHMARKS.md ("NVIDIA H100 80GB HBM3 (Vulkan)"), as one script:
# correctness with every kernel, the standard preset, the 4096×128 FP32-peak shape, decode
# bandwidth, 32768–131072-long sequences, and PyTorch for scale. Run it on the GPU machine with
# a release binary built elsewhere:
#   W=path/to/wgattn CASES=path/to/validation/cases OUT=results scripts/gpu/bench.sh
# Each step has its own timeout, so one hang does not take the rest with it.
set -u
W=${W:-target/release/wgattn}
CASES=${CASES:-../shared/validation/cases}
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
L=$OUT/log.txt
step() { echo "=== $(date +%T) $*" >>"$L"; }
here=$(dirname "$0")

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv >>"$L" 2>&1
step info; timeout 30 "$W" info >>"$L" 2>&1
for k in auto three-pass flash split-kv; do
  step "validate $k"
  timeout 120 "$W" validate --cases "$CASES" --kernel "$k" >"$OUT/validate_$k.txt" 2>&1
  tail -1 "$OUT/validate_$k.txt" >>"$L"
done
step bench-standard
timeout 120 "$W" bench --preset standard --seconds 1 --json >"$OUT/bench.jsonl" 2>>"$L"
timeout 120 "$W" bench --preset standard --timing wall --seconds 1 >>"$L" 2>&1
step bench-large
for extra in "" "--causal top-left" "--kernel three-pass"; do
  # shellcheck disable=SC2086
  timeout 60 "$W" bench --shape 1,32,32,4096,4096,128 $extra --seconds 2 --json >>"$OUT/bench.jsonl" 2>>"$L"
done
timeout 60 "$W" bench --shape 1,32,32,4096,4096,64 --shape 1,32,32,4096,4096,256 --seconds 1 --json >>"$OUT/bench.jsonl" 2>>"$L"
step bench-decode
for s in 1,8,8,1,4096,64 1,32,8,1,8192,128 1,32,8,1,131072,128 16,32,8,1,8192,128; do
  timeout 30 "$W" bench --shape "$s" --seconds 0.5 --json >>"$OUT/bench.jsonl" 2>>"$L"
done
step all-adapters
timeout 90 "$W" bench --all-adapters --shape 1,8,8,1024,1024,64 --shape 1,8,8,1,4096,64 --seconds 1 >>"$L" 2>&1
TM=""; [ -x /usr/bin/time ] && TM="/usr/bin/time -v"
for s in 32768 65536 131072; do
  step "long $s"
  timeout 60 "$W" gen --shape 1,4,4,$s,$s,64 --output /tmp/wgattn-long.safetensors >>"$L" 2>&1
  for causal in none bottom-right; do
    # shellcheck disable=SC2086
    timeout 60 $TM "$W" run --input /tmp/wgattn-long.safetensors --output /tmp/wgattn-long-out.safetensors \
      --causal $causal --check --check-rows 0,1,$((s / 2)),$((s - 1)) >>"$L" 2>&1
  done
done
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  step torch
  timeout 90 python3 "$here/torch_sdpa.py" >"$OUT/torch.jsonl" 2>>"$L"
  timeout 60 python3 "$here/copy_bandwidth.py" >>"$L" 2>&1
fi
step done
