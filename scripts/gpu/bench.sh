#!/usr/bin/env bash
# The real-GPU measurements of BENCHMARKS.md as one script, every engine in the same run:
#   1. `validate` with every kernel and fused variant: auto, three-pass, flash, split-kv, the
#      matrix-tile variant forced (cooperative matrices where the adapter reports them, else
#      the portable tile multiplies) and forbidden;
#   2. `tune` (f32 and f16) on the shapes below, into $OUT/tune.json;
#   3. `bench --json` f32 and f16, untuned and tuned (with $OUT/tune.json), and f32 with
#      --reduced-precision (f16 products on tensor cores where the adapter has them), with
#      `run --check` of it on a case of order-1 inputs;
#   4. PyTorch SDPA f32 and f16 (default backends, CUDA events) and the copy bandwidth, when
#      torch with CUDA is there;
#   5. burn's attention (scripts/peers/burn-attn; BURN = its binary, or the .gz that
#      scripts/gpu/pack-burn.sh makes), f32 and f16, its standard shapes.
# Run it on the GPU machine with a release binary built elsewhere:
#   W=path/to/wgattn CASES=path/to/validation/cases BURN=path/to/burn-attn.gz OUT=results \
#     scripts/gpu/bench.sh
# DRY=1 is the dry run for a CPU adapter (lavapipe): small shapes, short timings, no torch.
# LONG=1 adds the 32768–131072-long sequences (gen + run --check). Each step has its own
# timeout, so one hang does not take the rest with it; the log is $OUT/log.txt.
set -u
W=${W:-target/release/wgattn}
CASES=${CASES:-tests/data/validation}
OUT=${OUT:-gpu-results}
BURN=${BURN:-}
DRY=${DRY:-0}
LONG=${LONG:-0}
mkdir -p "$OUT"
L=$OUT/log.txt
step() { echo "=== $(date +%T) $*" | tee -a "$L" >&2; }
here=$(dirname "$0")

if [ "$DRY" = 1 ]; then
  BENCH_SETS=("--shape 1,8,8,256,256,64" "--shape 1,8,8,256,256,64 --causal top-left" "--shape 1,8,2,1,4096,64")
  TUNE_SHAPES=(--shape 1,8,8,256,256,64 --shape 1,8,2,1,4096,64)
  SECONDS_PER=0.2; TUNE_SECONDS=0.05; T=600
  KERNELS="auto flash"
else
  BENCH_SETS=("--preset standard" "--shape 1,32,32,4096,4096,128" "--shape 1,32,32,4096,4096,128 --causal top-left" "--shape 1,32,8,1,32768,128")
  TUNE_SHAPES=(--preset standard --shape 1,32,32,4096,4096,128 --shape 1,32,8,1,32768,128)
  SECONDS_PER=1; TUNE_SECONDS=0.3; T=120
  KERNELS="auto three-pass flash split-kv"
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv >>"$L" 2>&1
step info; timeout 30 "$W" info >>"$L" 2>&1

# 1. correctness with every kernel and variant (the built-in grid and the case files)
validate() { # NAME WGATTN_FLASH_MMA KERNEL
  step "validate $1"
  WGATTN_FLASH_MMA=$2 timeout "$T" "$W" validate --cases "$CASES" --kernel "$3" \
    >"$OUT/validate_$1.txt" 2>&1
  echo "exit $? $(tail -1 "$OUT/validate_$1.txt")" >>"$L"
}
for k in $KERNELS; do validate "$k" "" "$k"; done
for k in flash split-kv; do validate "mma-$k" 1 "$k"; done
validate no-mma 0 auto

# 2. tuning, f32 and f16
for dt in f32 f16; do
  step "tune $dt"
  timeout $((T * 3)) "$W" tune "${TUNE_SHAPES[@]}" --dtype "$dt" --cache "$OUT/tune.json" \
    --seconds "$TUNE_SECONDS" >>"$L" 2>&1
  echo "exit $?" >>"$L"
done

# 3. wgattn, f32 and f16, untuned and tuned (each record says dtype, tuned and variant)
for dt in f32 f16; do
  for tuning in "--untuned" "--tune-cache $OUT/tune.json"; do
    for set in "${BENCH_SETS[@]}"; do
      step "bench $dt $tuning $set"
      # shellcheck disable=SC2086
      timeout "$T" "$W" bench $set --dtype "$dt" $tuning --seconds "$SECONDS_PER" --json \
        >>"$OUT/bench.jsonl" 2>>"$L"
    done
  done
done

# 3b. f32 with reduced precision (the opt-in like PyTorch's allow_tf32): speed and accuracy
for set in "${BENCH_SETS[@]}"; do
  step "bench f32 --reduced-precision $set"
  # shellcheck disable=SC2086
  timeout "$T" "$W" bench $set --reduced-precision --untuned --seconds "$SECONDS_PER" --json \
    >>"$OUT/bench.jsonl" 2>>"$L"
done
step "run --check --reduced-precision"
timeout 60 "$W" gen --shape 1,8,2,300,500,128 --output /tmp/wgattn-reduced.safetensors >>"$L" 2>&1
timeout "$T" "$W" run --input /tmp/wgattn-reduced.safetensors --output /tmp/wgattn-reduced-out.safetensors \
  --reduced-precision --check >>"$L" 2>&1
echo "exit $?" >>"$L"

# 4. PyTorch SDPA (same shapes) and the copy bandwidth
if [ "$DRY" != 1 ] && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  step torch
  timeout 180 python3 "$here/torch_sdpa.py" f32 f16 >"$OUT/torch.jsonl" 2>>"$L"
  timeout 60 python3 "$here/copy_bandwidth.py" >>"$L" 2>&1
else
  step "torch skipped (DRY=$DRY or no torch with CUDA)"
fi

# 5. burn (f32 and f16; its standard shapes), from the packed binary
if [ -n "$BURN" ]; then
  step burn
  B=$BURN
  case "$BURN" in
    *.gz) B=$(mktemp /tmp/burn-attn.XXXXXX); gunzip -c "$BURN" >"$B"; chmod +x "$B" ;;
  esac
  for dt in f32 f16; do
    if [ "$DRY" = 1 ]; then
      timeout "$T" "$B" bench --impl fused --only 1x8x512x64 --min-runs 3 --target-s 0.2 --dtype $dt \
        >"$OUT/burn_$dt.txt" 2>&1
    else
      timeout 300 "$B" bench --impl fused --min-runs 5 --target-s 1 --dtype $dt >"$OUT/burn_$dt.txt" 2>&1
    fi
    echo "burn $dt exit $?" >>"$L"
  done
else
  step "burn skipped (BURN unset)"
fi

# 6. optional: very long sequences
if [ "$LONG" = 1 ]; then
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
fi
step done
