#!/usr/bin/env bash
# Installs the third-party Kafka clients the black-box tests drive: Debian's kcat (librdkafka
# 2.0.2) and, from PyPI, kafka-python and confluent-kafka; and Debian's fonts-dejavu-core, whose
# DejaVu Sans the load generator's PNG plots use for their text; and what the chaos harness needs
# (iproute2, nftables, e2fsprogs, util-linux). Idempotent and quick when they are
# already present, so `make test` runs it every time.
set -euo pipefail

need_apt=()
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# tests/tls.rs makes its CA and certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || need_apt+=(fonts-dejavu-core)
# The chaos harness (tests/chaos/): namespaces and tbf (iproute2), cut links (nftables), the
# loop-mounted data filesystems (e2fsprogs, mount), time namespaces (util-linux's unshare).
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import kafka, confluent_kafka' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    'kafka-python==3.0.12' 'confluent-kafka==2.16.1'
fi
