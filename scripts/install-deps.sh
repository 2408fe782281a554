#!/usr/bin/env bash
# Installs the Debian packages atelier builds, tests and demos with; a no-op
# when everything is present. Uses sudo only when not root.
set -euo pipefail

packages=(
  g++ make cmake ccache pkg-config
  libtorch-dev                      # LibTorch C++ frontend (CPU)
  libopenmpi-dev openmpi-bin        # MPI ranks and CPU all-reduce
  libboost-dev                      # Boost.Asio, Boost.CRC
  libspdlog-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev
  libopencv-dev                     # resize and colour (core + imgproc); imgcodecs only as the tests' reference
  libturbojpeg0-dev                 # TurboJPEG: every JPEG read and written
  libpng-dev                        # libpng: every PNG read and written
  libssl-dev                        # HMAC-SHA256 of the loader service handshake
  libgtest-dev
  opencv-doc                        # the demo's embedded photographs and paintings
  chromium                          # headless: the explain report test renders report.html
  python3-torch python3-torchvision # reference for weight import tests and benchmarks
  slurm-wlm munge                   # the real one-node SLURM of the cluster tests (cluster/local/)
  iproute2                          # ip netns: the two hosts on one machine of cluster/local/netns.sh
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
