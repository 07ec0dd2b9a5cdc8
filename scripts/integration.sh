#!/usr/bin/env bash
# make test-integration: the integration tier against real Apache Kafka.
# Uses SAGAZ_KAFKA_BROKERS when set; otherwise starts a single-node KRaft
# broker from the Apache Kafka jars (scripts/kafka-local.sh) and stops it
# afterwards, also on failure. Installs kcat when missing (Debian, as root).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if ! command -v kcat >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "integration: installing kcat" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
  else
    echo "integration: kcat is missing; install the kcat package" >&2
    exit 1
  fi
fi

if [ -z "${SAGAZ_KAFKA_BROKERS:-}" ]; then
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/sagaz-kafka.XXXXXX")
  trap '"$ROOT/scripts/kafka-local.sh" stop "$DIR"; rm -rf "$DIR"' EXIT
  t0=$SECONDS
  SAGAZ_KAFKA_BROKERS=$(scripts/kafka-local.sh start "$DIR")
  echo "integration: Apache Kafka up on $SAGAZ_KAFKA_BROKERS after $((SECONDS - t0))s (fetch included)" >&2
  export SAGAZ_KAFKA_BROKERS
  export SAGAZ_KAFKA_RESTART_CMD="$ROOT/scripts/kafka-local.sh restart $DIR"
  export SAGAZ_KAFKA_STOP_CMD="$ROOT/scripts/kafka-local.sh stop $DIR"
  export SAGAZ_KAFKA_RESUME_CMD="$ROOT/scripts/kafka-local.sh resume $DIR"
fi

cd integration
t0=$SECONDS
go test -race -count=1 -timeout 20m "$@" ./...
echo "integration: tests took $((SECONDS - t0))s" >&2
