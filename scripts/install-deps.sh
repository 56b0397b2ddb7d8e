#!/usr/bin/env bash
# Installs everything vkrnn needs on Debian 12 from Debian's own packages. Idempotent:
# already-installed packages are left alone, so running it twice costs one apt-get check.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
  glslang-tools spirv-tools
  libfmt-dev libgtest-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev
  libstb-dev libpng-dev
  python3 python3-torch python3-numpy libopenblas0-openmp
  g++-mingw-w64-x86-64-posix
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
