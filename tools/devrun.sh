#!/usr/bin/env bash
# One device run: build for the local GPU, GPU tests, then benchmarks. Logs go to $OUT.
# usage: bash tools/devrun.sh [tests|bench|all|quick] [pytest args...]
set -uo pipefail
export PYTHONUNBUFFERED=1
export LLAMA_KERNEL_TOKENIZER_FIXTURES=$PWD/.fixtures/llama3-tokenizer
OUT=${OUT:-/tmp/out}
what=${1:-all}; shift || true
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
t0=$(date +%s)
LLAMA_KERNEL_CUDA_ARCHS=${ARCHS:-90} python3 setup.py build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [ "$what" = tests ] || [ "$what" = all ]; then
  if [ $# -gt 0 ]; then args=("$@"); else args=(tests/test_cuda.py tests/test_tokenizer_hf.py); fi
  timeout 420 python3 -m pytest -q -rA --durations=30 --maxfail=25 -p no:cacheprovider "${args[@]}" > $OUT/tests.log 2>&1
  echo "tests rc=$?"; grep -E "passed|failed|error" $OUT/tests.log | tail -3; grep -E "^(FAILED|ERROR)" $OUT/tests.log | head -30
fi
if [ "$what" = sanitize ] || [ "$what" = all ]; then
  # compute-sanitizer over the GPU tests with small shapes (the big ones only take longer)
  sel="attention or 136-384 or 1000-640 or 8-128 or float64 or sampler_matches or graph_and_eager or decode_path_matches_prefill_path or (tiled_layout and 3072-2048) or (tiled_layout and 2048-8192) or tiled_engine or batch_equals or ffn_fused_kernel_matches_cpu or many_splits or (wgmma and 136-384) or (wgmma and 1000-640) or (wgmma and 3072-2048--0) or (wgmma and 3072-2048-256-0) or (both_kernels and tc) or (rotary_wgmma and 1b)"
  timeout 400 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "$sel" > $OUT/memcheck.log 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|passed|failed" $OUT/memcheck.log | tail -3
  timeout 300 compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "attention and 64-32-8 or 136-384 or (tiled_layout and 3072-2048) or (tiled_engine and 2-1) or (ffn_fused_kernel_matches_cpu and 1) or (wgmma and 136-384)" > $OUT/racecheck.log 2>&1
  echo "racecheck rc=$?"; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|hazard|passed|failed" $OUT/racecheck.log | tail -4
fi
if [ "$what" = bench ] || [ "$what" = all ] || [ "$what" = quick ]; then
  timeout 200 python3 benchmarks/bench_e2e.py --quick > $OUT/bench_e2e.log 2>&1; cat $OUT/bench_e2e.log | tail -12
  timeout 60 python3 benchmarks/kernel_profile.py --batch 1 > $OUT/kprof.log 2>&1; head -22 $OUT/kprof.log
  if [ "$what" != quick ]; then
    timeout 120 python3 benchmarks/bench_attention.py > $OUT/bench_attention.log 2>&1; tail -13 $OUT/bench_attention.log
    timeout 100 python3 benchmarks/bench_tokenizer.py > $OUT/bench_tokenizer.log 2>&1; tail -5 $OUT/bench_tokenizer.log
    timeout 60 python3 tools/check_unicode_reference.py .fixtures/llama3-tokenizer/tokenizer.json 2>&1 | tail -4
    timeout 240 python3 benchmarks/bench_matmul.py --quick ${PEERS:---no-peers} --ms 1,4,16 > $OUT/bench_matmul.log 2>&1; grep -E "^\| (qkv|o|gate_up|down|lm_head) \|" $OUT/bench_matmul.log
  fi
fi
