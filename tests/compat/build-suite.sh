#!/usr/bin/env bash
# Builds librdkafka and its regression-test runner from the librdkafka source tree that ships
# inside the rdkafka-sys crate (the version pinned in Cargo.lock), in a build directory outside
# the clone. Cached: when the source, the configure flags and this script are unchanged and the
# runner exists, nothing is rebuilt.
#
# Usage: build-suite.sh            (prints the path of the built tests/ directory on stdout)
# Env:   COMPAT_BUILD_DIR          build directory [~/.cache/ringbroker/librdkafka-compat]
#        COMPAT_JOBS               make -j value [2]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
build_root=${COMPAT_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ringbroker/librdkafka-compat}
jobs=${COMPAT_JOBS:-2}
configure_flags=(--disable-gssapi --disable-curl)
# Bump when the build steps below change in a way that needs a rebuild (comments do not).
recipe=2

die() { echo "compat/build-suite: $*" >&2; exit 1; }
log() { echo "compat/build-suite: $*" >&2; }

case "$build_root/" in
  "$repo"/*) die "COMPAT_BUILD_DIR ($build_root) must be outside the clone ($repo)" ;;
esac

# 1. Locate librdkafka inside the rdkafka-sys crate pinned by Cargo.lock.
ver=$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$repo/Cargo.lock")
[[ -n $ver ]] || die "rdkafka-sys not found in $repo/Cargo.lock"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
find_src() { compgen -G "$cargo_home/registry/src/*/rdkafka-sys-$ver/librdkafka/tests/test.c" | head -n1 || true; }
src_test_c=$(find_src)
if [[ -z $src_test_c ]]; then
  log "rdkafka-sys-$ver not in $cargo_home/registry/src; running cargo fetch"
  (cd "$repo" && cargo fetch --locked >&2) || die "cargo fetch failed"
  src_test_c=$(find_src)
  [[ -n $src_test_c ]] || die "rdkafka-sys-$ver/librdkafka not found under $cargo_home/registry/src after cargo fetch"
fi
src=$(dirname "$(dirname "$src_test_c")")

# 2. Cache key: crate version and path, configure flags, recipe version, optional headers.
# Optional headers configure probes for are part of the key too, so installing one rebuilds.
optional=$(for h in /usr/include/rapidjson/schema.h /usr/include/zstd.h /usr/include/lz4.h /usr/include/openssl/ssl.h /usr/include/zlib.h; do [[ -e $h ]] && echo "$h"; done)
key=$(printf '%s\n' "$ver" "$src" "${configure_flags[*]}" "recipe=$recipe" "$optional" | sha256sum | cut -d' ' -f1)
dest=$build_root/librdkafka-$ver
stamp=$dest/.ringbroker-compat-stamp
if [[ -f $stamp && $(<"$stamp") == "$key" && -x $dest/tests/test-runner && -f $dest/src/librdkafka.so.1 ]]; then
  log "cached build is up to date: $dest"
  echo "$dest/tests"
  exit 0
fi

# 3. Fresh copy (crate sources are read-only; the copy is made writable), configure, build.
start=$SECONDS
log "building librdkafka $ver and its test runner in $dest (make -j$jobs; takes several minutes)"
mkdir -p "$build_root"
rm -rf "$dest.tmp"
cp -R "$src" "$dest.tmp"
chmod -R u+w "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
cd "$dest"
buildlog=$dest/build.log
{
  ./configure "${configure_flags[@]}" &&
  make -j"$jobs" libs &&
  make -j"$jobs" -C tests build
} >"$buildlog" 2>&1 || { tail -n 30 "$buildlog" >&2; die "build failed, full log: $buildlog"; }
[[ -x tests/test-runner ]] || die "build finished but tests/test-runner is missing (log: $buildlog)"
echo "$key" >"$stamp"
log "built in $((SECONDS - start))s: $dest/tests/test-runner"
echo "$dest/tests"
