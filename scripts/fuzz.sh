#!/usr/bin/env bash
# Fuzzes every target of tests/fuzz with libFuzzer for SECONDS each
# (default 60): builds them with clang and -fsanitize=fuzzer,address,undefined
# in build-fuzz/ (atelier_data and the targets only), seeds each from
# tests/fuzz/corpus/<target>, keeps what it learns in build-fuzz/corpus/ and
# any crash in build-fuzz/crashes/<target>/. Not part of `make test`, which
# replays the seed corpora (and the crash inputs kept there once fixed)
# through the same entry points without libFuzzer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="${FUZZ_BUILD:-$root/build-fuzz}"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image_decode protocol handshake shards npy state_dict manifest events config)
command -v clang++ >/dev/null || { echo "fuzz.sh needs clang (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DATELIER_FUZZ=ON -DBUILD_TESTING=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >"$build/configure.log" 2>&1 ||
  { tail -20 "$build/configure.log" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/#/fuzz_}"

status=0
for target in "${targets[@]}"; do
  corpus="$build/corpus/$target" crashes="$build/crashes/$target"
  mkdir -p "$corpus" "$crashes"
  echo "== $target: ${seconds} s"
  # Leaks in third-party libraries' one-time state are not what this looks for.
  if ! ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=0 \
       "$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
       -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" "$root/tests/fuzz/corpus/$target" \
       2>"$build/$target.log"; then
    echo "   crashed: $(ls "$crashes")" >&2
    status=1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|cov: " "$build/$target.log" | tail -3 | sed 's/^/   /'
done
exit $status
