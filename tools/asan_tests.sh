#!/usr/bin/env bash
# The whole test suite against an AddressSanitizer + UBSan build of the
# extension (CPU path), in a scratch copy of the tracked files so the normal
# build is untouched. Fails on any sanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
tmp=$(mktemp -d)
git ls-files -z | xargs -0 -I{} cp --parents {} "$tmp"/ 2>/dev/null || git ls-files | tar -cf - -T - | (cd "$tmp" && tar -xf -)
for d in "$src/../shared/fixtures/llama3-tokenizer" "$src/.fixtures/llama3-tokenizer"; do
  [ -f "$d/tokenizer.json" ] && export LLAMA_KERNEL_TOKENIZER_FIXTURES=${LLAMA_KERNEL_TOKENIZER_FIXTURES:-$d}
done
cd "$tmp"
LLAMA_KERNEL_CUDA=0 LLAMA_KERNEL_SANITIZE=1 python3 setup.py build_ext --inplace -q 2>&1 | grep -vE "Beta|cannot be found|warnings.warn" || true
export LD_PRELOAD=$(gcc -print-file-name=libasan.so)
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LLAMA_KERNEL_SANITIZED=1  # tests that measure RSS skip: ASan's quarantine keeps freed memory
python3 -m pytest -q -p no:cacheprovider -x tests "$@"
echo "asan+ubsan test run: OK ($tmp)"
