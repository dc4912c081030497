#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan) and runs each for
# $1 seconds (default 60) from the seed corpus in tests/fuzz_corpus. Fails
# on any crash, leak or sanitizer report. New inputs go to a temp copy.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
out=${FUZZ_OUT:-$(mktemp -d)}
CC=${CC:-clang}
core="csrc/lk_common.c csrc/lk_json.c csrc/lk_safetensors.c csrc/lk_tokenizer.c"
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -D_GNU_SOURCE -Icsrc"
declare -A corpus=([fuzz_safetensors]=safetensors [fuzz_json]=json [fuzz_tokenizer_load]=tokenizer [fuzz_tokenizer_text]=text)
status=0
for h in fuzz_safetensors fuzz_json fuzz_tokenizer_load fuzz_tokenizer_text; do
  $CC $flags $core fuzz/$h.c -o "$out/$h" -lpthread -lm
  mkdir -p "$out/corpus_$h"
  cp tests/fuzz_corpus/${corpus[$h]}/* "$out/corpus_$h/"
  echo "== $h: ${secs}s"
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$out/$h" -max_total_time="$secs" -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$out/crash-$h-" "$out/corpus_$h" > "$out/$h.log" 2>&1; then
    echo "FAILED: $h (log and reproducer under $out)"; tail -40 "$out/$h.log"; status=1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/$h.log" | tr '\n' ' '; echo
done
exit $status
