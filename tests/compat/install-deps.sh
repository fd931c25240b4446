#!/usr/bin/env bash
# Installs what `make compat` needs on a fresh Debian/Ubuntu machine: a C/C++ toolchain and the
# -dev packages librdkafka's configure looks for (OpenSSL, zlib, zstd, lz4), plus python3 and
# confluent-kafka (through tests/install-deps.sh) for the kafka-topics.sh stand-in.
# Idempotent: only missing packages are installed, so it is quick when everything is present.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# package -> a file that proves it is installed (dpkg -s is slow-ish and misses virtual packages)
declare -A probe=(
  [build-essential]=/usr/bin/g++
  [make]=/usr/bin/make
  [pkg-config]=/usr/bin/pkg-config
  [libssl-dev]=/usr/include/openssl/ssl.h
  [zlib1g-dev]=/usr/include/zlib.h
  [libzstd-dev]=/usr/include/zstd.h
  [liblz4-dev]=/usr/include/lz4.h
  [rapidjson-dev]=/usr/include/rapidjson/schema.h  # lets test 0053 validate stats JSON
)

missing=()
for pkg in "${!probe[@]}"; do
  if [[ ! -e ${probe[$pkg]} ]] && ! dpkg -s "$pkg" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "compat/install-deps: missing ${missing[*]} and no apt-get here; install them by hand" >&2
    exit 1
  fi
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "compat/install-deps: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "compat/install-deps: apt-get install ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# python3 + confluent-kafka (the kafka-topics.sh stand-in uses its AdminClient).
"$here/../install-deps.sh"
