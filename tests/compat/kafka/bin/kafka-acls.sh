#!/usr/bin/env bash
# Stand-in for Apache Kafka's bin/kafka-acls.sh used by librdkafka's test suite under
# `make compat`; implemented over the admin API in ../../kafka_admin.py (see docs/COMPAT.md).
set -euo pipefail
exec python3 "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/kafka_admin.py" acls "$@"
