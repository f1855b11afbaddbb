#!/usr/bin/env bash
# Crab set-up: installs everything Crab needs on Debian 12, idempotently.
# Every step checks whether its result is already there and prints what it does.
# State and caches live under $CRAB_HOME (default /var/lib/crab).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CRAB_HOME="${CRAB_HOME:-/var/lib/crab}"
STAMPS="$CRAB_HOME/setup"
SKIP_IMAGES="${CRAB_SETUP_SKIP_IMAGES:-0}"
CRIU_VERSION_WANTED="4.2"

APT_PACKAGES=(
  runc iptables debootstrap tini iproute2 util-linux coreutils xz-utils dpkg-dev python3
  clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev make gcc pkg-config
  protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev protobuf-compiler python3-protobuf
  libnl-3-dev libnl-route-3-dev libnet1-dev libcap-dev libaio-dev libgnutls28-dev
  libbsd-dev uuid-dev libnftables-dev
)

t_all=$(date +%s%N)
step() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

if [ "$(id -u)" != 0 ]; then
  echo "crab setup must run as root (it installs packages, builds CRIU and mounts tracefs)." >&2
  exit 1
fi
# CRAB_HOME holds process images (agents' API keys) and the agents' files: no other host user may
# look in (the runtime also makes its top-level entries private at every start).
mkdir -p "$CRAB_HOME" && chmod go-rwx "$CRAB_HOME"
mkdir -p "$STAMPS"

# 1. Debian packages -------------------------------------------------------
t=$(date +%s%N)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -t bookworm "${missing[@]}" >/dev/null
else
  step "apt: all ${#APT_PACKAGES[@]} packages present"
fi
echo "        $(ms_since "$t") ms"

# 2. CRIU 4.2.x from Debian sid's source package (bookworm's 3.17 fails on this kernel) ----
t=$(date +%s%N)
if /usr/local/sbin/criu --version 2>/dev/null | grep -q "Version: ${CRIU_VERSION_WANTED}"; then
  step "criu: $(/usr/local/sbin/criu --version | head -1) already installed"
else
  step "criu: building 4.2.1 from Debian's source package (about a minute)"
  src_list=/etc/apt/sources.list.d/crab-criu-src.list
  # The Debian mirror this machine already uses (one-line or deb822 sources), never a security one.
  mirror=$( (grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) \
    | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -1 || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
  build="$CRAB_HOME/build/criu"
  rm -rf "$build" && mkdir -p "$build"
  echo "deb-src [trusted=yes] ${mirror%/} sid main" > "$src_list"
  trap 'rm -f "$src_list"' EXIT
  apt-get update -qq -o Dir::Etc::sourcelist="$src_list" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
  # The .debian.tar.xz may 404 and make apt-get exit non-zero; only the orig tarball matters.
  (cd "$build" && apt-get source --download-only criu/sid >/dev/null 2>&1 || true)
  rm -f "$src_list"; trap - EXIT
  apt-get update -qq
  orig=$(ls "$build"/criu_4.2*.orig.tar.* 2>/dev/null | head -1 || true)
  if [ -z "$orig" ]; then
    echo "criu: could not download criu 4.2.x source from Debian sid (looked in $build). Check the apt mirror." >&2
    exit 1
  fi
  tar -C "$build" -xf "$orig"
  srcdir=$(find "$build" -maxdepth 1 -type d -name 'criu-4.2*' | head -1)
  make -C "$srcdir" -j"$(nproc)" criu >"$build/make.log" 2>&1 || { tail -30 "$build/make.log" >&2; exit 1; }
  install -m 0755 "$srcdir/criu/criu" /usr/local/sbin/criu
  mkdir -p "$CRAB_HOME/share/criu" && cp "$srcdir/images/rpc.proto" "$CRAB_HOME/share/criu/rpc.proto"
  step "criu: installed $(/usr/local/sbin/criu --version | head -1)"
fi
/usr/local/sbin/criu check >/dev/null 2>&1 || echo "        warning: 'criu check' did not say it looks good" >&2
echo "        $(ms_since "$t") ms"

# 3. Kernel interfaces the runtime needs ------------------------------------
t=$(date +%s%N)
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
step "kernel: tracefs mounted"
echo "        $(ms_since "$t") ms"

# 4. Node dependencies and the TypeScript build -----------------------------
t=$(date +%s%N)
cd "$ROOT"
lock_sum=$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f node_modules/.crab-lock-sum ] || [ "$(cat node_modules/.crab-lock-sum)" != "$lock_sum" ]; then
  step "npm: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.crab-lock-sum
else
  step "npm: node_modules up to date"
fi
echo "        $(ms_since "$t") ms"
t=$(date +%s%N)
step "build: tsc"
# bin/crab rebuilds when a source is newer than this stamp; it gets the build's start time, so an
# edit made during the build still counts as newer.
mkdir -p dist && touch dist/.crab-build-stamp.new
npx tsc -p tsconfig.json
echo "        $(ms_since "$t") ms"

# 5. Native helpers ------------------------------------------------------------
if [ -f native/Makefile ]; then
  t=$(date +%s%N)
  step "native: make -C native"
  make -s -C native >/dev/null
  echo "        $(ms_since "$t") ms"
fi
mv dist/.crab-build-stamp.new dist/.crab-build-stamp

# 6. Base image -----------------------------------------------------------------
if [ "$SKIP_IMAGES" != 1 ]; then
  t=$(date +%s%N)
  step "image: debian-bookworm-minbase"
  node "$ROOT/dist/src/cli/main.js" image build debian-bookworm-minbase
  echo "        $(ms_since "$t") ms"
fi

step "done in $(ms_since "$t_all") ms"
