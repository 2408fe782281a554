#!/usr/bin/env bash
# The GPU check in one call. A GPU machine here has a CUDA PyTorch, CMake and
# a compiler, but no apt, no network and no MPI: the Debian libraries the
# build needs travel with the working tree as .deb files.
#
#   scripts/gpu-check.sh --prepare    CPU machine with apt: download the .deb
#                                     files into .gpu-debs/ (git-ignored)
#   scripts/gpu-check.sh [--budget S] GPU machine: unpack .gpu-debs/ into a
#                                     prefix of its own, build atelier against
#                                     this machine's CUDA PyTorch (no MPI),
#                                     run `ctest -L gpu` and the GPU step
#                                     benchmarks; Markdown to $OUT/gpu-check.md
#                                     (and stdout)
#   scripts/gpu-check.sh --rehearse   CPU machine after --prepare: the same
#                                     build against Debian's LibTorch, every
#                                     library but LibTorch from the prefix
#                                     (checked); the GPU tests skip
#
# Environment: GPU_CHECK_DIR (work folder, default build-gpu/), JOBS.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
debs="$root/.gpu-debs"
work="${GPU_CHECK_DIR:-$root/build-gpu}"
prefix="$work/prefix"
build="$work/build"
jobs="${JOBS:-$(nproc)}"
report="${OUT:+$OUT/gpu-check.md}"
mode=check
budget=420  # no benchmark starts after this many seconds (the device call is limited to 8 minutes)
case "${1:-}" in
  --prepare) mode=prepare ;;
  --rehearse) mode=rehearse ;;
  --budget) budget="$2" ;;
  "") ;;
  *) echo "usage: $0 [--prepare | --rehearse | --budget SECONDS]" >&2; exit 2 ;;
esac
started=$(date +%s)

# Everything but LibTorch, CUDA and the compiler: runtime libraries and their
# -dev halves (headers, .so links, CMake files). OpenCV is core + imgproc
# only: imgcodecs' closure (~170 MiB) cannot travel.
packages=(
  libopencv-core406 libopencv-core-dev libopencv-imgproc406 libopencv-imgproc-dev
  libblas3 liblapack3 libgfortran5 libquadmath0 libtbb12 libglx0 libglvnd0 libglx-mesa0
  libturbojpeg0 libturbojpeg0-dev libpng16-16 libpng-dev zlib1g zlib1g-dev
  libyaml-cpp0.7 libyaml-cpp-dev libspdlog1.10 libspdlog-dev libfmt9 libfmt-dev
  libcli11-dev nlohmann-json3-dev libboost1.74-dev libgtest-dev libssl3 libssl-dev
)

say() { echo "gpu-check: $*" >&2; }

prepare() {
  mkdir -p "$debs"
  cd "$debs"
  [ -n "$(find /var/lib/apt/lists -name '*Packages*' -print -quit 2>/dev/null)" ] || apt-get update -qq
  apt-get download "${packages[@]}" >/dev/null
  local size
  size=$(du -sm "$debs" | cut -f1)
  say "downloaded ${#packages[@]} packages into $debs: ${size} MiB"
  if [ "$size" -gt 48 ]; then say "more than 48 MiB: with the working tree it may not fit in 64 MiB"; exit 1; fi
}

# Unpacks every .deb into $prefix (never into /): dpkg-deb where there is
# one, else ar + tar.
unpack() {
  [ -n "$(ls "$debs"/*.deb 2>/dev/null)" ] || { say "no .deb files in $debs: run $0 --prepare on a CPU machine"; exit 1; }
  rm -rf "$prefix"
  mkdir -p "$prefix"
  for deb in "$debs"/*.deb; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$deb" "$prefix"
    else
      (cd "$work" && rm -rf ar.tmp && mkdir ar.tmp && cd ar.tmp && ar x "$deb" && tar -xf data.tar.* -C "$prefix")
    fi
  done
  # Absolute symlinks inside the packages (libblas.so.3 -> /etc/alternatives/...)
  # point outside the prefix: repoint them into it.
  find "$prefix" -type l | while read -r link; do
    local target
    target=$(readlink "$link")
    case "$target" in /*) [ -e "$prefix$target" ] && ln -sfn "$prefix$target" "$link" ;; esac
  done
  # Debian's BLAS/LAPACK live under alternatives folders the loader does not search.
  local lib="$prefix/usr/lib/x86_64-linux-gnu"
  for so in "$lib"/blas/libblas.so.3 "$lib"/lapack/liblapack.so.3; do
    if [ -e "$so" ]; then ln -sfn "$so" "$lib/$(basename "$so")"; fi
  done
}

torch_prefix() {
  if [ "$mode" = rehearse ]; then echo /usr; return; fi
  python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'
}

# NCCL from the CUDA toolkit, else from the pip package PyTorch depends on.
nccl_root() {
  python3 - <<'PY' 2>/dev/null || true
import importlib, os
try:
    m = importlib.import_module("nvidia.nccl")
    print(list(m.__path__)[0])
except Exception:
    pass
PY
}

configure_and_build() {
  local lib="$prefix/usr/lib/x86_64-linux-gnu" generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  local nccl
  nccl=$(nccl_root)
  rm -rf "$build"
  # OpenCV's own CMake files would want every module: find core + imgproc by
  # path (CMakeLists.txt's fallback). MPI: none on the GPU machine.
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix/usr;$(torch_prefix)" -DCMAKE_DISABLE_FIND_PACKAGE_OpenCV=ON \
    -DCMAKE_LIBRARY_PATH="$lib" -DCMAKE_INCLUDE_PATH="$prefix/usr/include" \
    -DOPENSSL_ROOT_DIR="$prefix/usr" -DATELIER_MPI=OFF ${nccl:+-DNCCL_ROOT="$nccl"} \
    -DCMAKE_BUILD_RPATH="$lib;$lib/blas;$lib/lapack" >"$work/configure.log" 2>&1 ||
    { tail -30 "$work/configure.log" >&2; return 1; }
  cmake --build "$build" -j "$jobs" --target atelier test_gpu bench_step bench_data_wait bench_reducer >"$work/build.log" 2>&1 ||
    { grep -m 20 -E "error|Error" "$work/build.log" >&2; return 1; }
}

# Every library but LibTorch must come from the prefix (rehearsal: the CPU
# machine has them all in /usr too, which would hide a missing package).
check_prefix_use() {
  local bad=0 key value
  for key in OpenCV_INCLUDE_DIRS OPENCV_CORE_LIBRARY TURBOJPEG_LIBRARY PNG_LIBRARY_RELEASE PNG_PNG_INCLUDE_DIR \
             ZLIB_INCLUDE_DIR yaml-cpp_DIR spdlog_DIR fmt_DIR CLI11_DIR nlohmann_json_DIR Boost_DIR GTest_DIR \
             OPENSSL_CRYPTO_LIBRARY OPENSSL_INCLUDE_DIR; do
    value=$(grep -m1 "^$key:" "$build/CMakeCache.txt" | cut -d= -f2- || true)
    case "$value" in
      "$prefix"/*) ;;
      *) say "$key is '$value', not under $prefix"; bad=1 ;;
    esac
  done
  return $bad
}

run_tests() {
  (cd "$build" && timeout 240 ctest -L gpu --output-on-failure -V 2>&1) >"$work/ctest.log" || return 1
}

# The ctest summary line and, once each, why tests skipped.
test_summary() {
  grep -E "tests passed|tests failed" "$work/ctest.log" | sed 's/^/    /' || true
  grep -A1 -E ": Skipped$" "$work/ctest.log" | grep -v -E ": Skipped$|^--$" | sed 's/^[0-9]*: //' | sort | uniq -c |
    sed 's/^ *\([0-9]*\) \(.*\)/    skipped \1: \2/' || true
  grep -E "\(Failed\)|\(Timeout\)" "$work/ctest.log" | sed 's/^/    /' || true
}

# One step benchmark: atelier's step against the PyTorch reference on the
# same device, same shapes; prints a Markdown row with the ratio.
bench_row() {
  local family=$1 precision=$2 device=$3; shift 3
  local script=adain_step.py cpp_family=adain
  [ "$family" = cyclegan ] && script=cyclegan_step.py && cpp_family=cyclegan
  local cpp py
  cpp=$(timeout 120 "$build/bench/bench_step" --family "$cpp_family" --precision "$precision" --device "$device" "$@" |
        sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p') || cpp=""
  py=$(cd "$root/bench" && timeout 120 python3 "$script" --precision "$precision" --device "$device" "$@" |
       sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p') || py=""
  local ratio="n/a"
  [ -n "$cpp" ] && [ -n "$py" ] && ratio=$(python3 -c "print(f'{$cpp / $py:.2f}')")
  echo "| $family | $precision | $* | ${cpp:-failed} | ${py:-failed} | $ratio |"
}

# The AdaIN step fed by the loader (pinned batches copied at the step, and
# copied ahead on DeviceBatches' stream as training does) against the same
# step on a batch already on the GPU: the data wait.
data_wait_row() {
  [ $(( $(date +%s) - started )) -lt "$budget" ] || { echo; echo "- data wait: (time budget spent)"; return; }
  local line
  line=$(timeout 150 "$build/bench/bench_data_wait" --device cuda --size 256 --width 64 --batch 8 \
           --workers "$(( jobs > 2 ? jobs - 2 : 1 ))" --threads 2 --steps 10 --rounds 3 | grep '^data_wait') || line=""
  echo
  echo "- data wait (AdaIN-GAN, 256 px, width 64, batch 8): ${line:-failed}"
}

# The gradient reducer's own cost at world size 1 (NCCL through the TCP
# rendezvous): the backward with and without it.
reducer_row() {
  [ $(( $(date +%s) - started )) -lt "$budget" ] || { echo "- reducer overhead: (time budget spent)"; return; }
  local line
  line=$(timeout 120 "$build/bench/bench_reducer" --device cuda --backend nccl --size 256 --width 64 --batch 8 \
           --steps 10 --rounds 3 | grep '^reducer') || line=""
  echo "- reducer overhead at world size 1 (AdaIN-GAN backward, 256 px, width 64, batch 8): ${line:-failed}"
}

main() {
  mkdir -p "$work"
  if [ "$mode" = prepare ]; then prepare; return; fi
  unpack
  local lib="$prefix/usr/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$lib:$lib/blas:$lib/lapack${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local out="$work/gpu-check.md" status=0
  {
    echo "# atelier GPU check ($(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo
    echo "- mode: $mode; $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi')"
    echo "- PyTorch: $(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null || echo none)"
  } >"$out"
  if ! configure_and_build; then
    echo "- build: **failed** (see $work/configure.log, $work/build.log)" >>"$out"
    status=1
  else
    echo "- build: $(( $(date +%s) - started )) s, $("$build/atelier" --version 2>/dev/null | tr '\n' ';')" >>"$out"
    if [ "$mode" = rehearse ] && ! check_prefix_use 2>>"$out"; then status=1; fi
    if run_tests; then echo "- \`ctest -L gpu\`: passed" >>"$out"; else echo "- \`ctest -L gpu\`: **failed**" >>"$out"; status=1; fi
    test_summary >>"$out"
    if [ "$mode" = check ]; then
      {
        echo
        echo "| family | precision | shape | atelier ms | PyTorch ms | ratio |"
        echo "|---|---|---|---|---|---|"
        for precision in fp32 bf16; do
          [ $(( $(date +%s) - started )) -lt "$budget" ] || { echo "| (time budget spent) |||||"; break; }
          bench_row adain "$precision" cuda --size 256 --width 64 --batch 8 --steps 10 --warmup 3
          bench_row cyclegan "$precision" cuda --size 256 --width 64 --blocks 9 --batch 1 --steps 10 --warmup 3
        done
        data_wait_row
        reducer_row
      } >>"$out"
    fi
  fi
  echo "- total: $(( $(date +%s) - started )) s" >>"$out"
  [ -n "$report" ] && cp "$out" "$report"
  cat "$out"
  return $status
}

main
