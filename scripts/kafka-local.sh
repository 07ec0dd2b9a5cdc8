#!/usr/bin/env bash
# Runs a single-node Apache Kafka (KRaft) broker on a free loopback port,
# fetched from Maven Central with Maven into a cache outside the repository.
#
#   scripts/kafka-local.sh fetch          download the jars (idempotent)
#   scripts/kafka-local.sh start [DIR]    format + start; prints the bootstrap address
#   scripts/kafka-local.sh stop  [DIR]    stop it (SIGTERM, then SIGKILL)
#   scripts/kafka-local.sh restart [DIR]  stop and start on the same port and data
#   scripts/kafka-local.sh resume  [DIR]  start a stopped broker on the same port and data
#   scripts/kafka-local.sh addr  [DIR]    print the bootstrap address
#
# DIR holds the broker's config, data, log and pid (default: .cache/kafka-local
# under the repository, git-ignored). Environment:
#   KAFKA_VERSION  (default 4.1.1)   SAGAZ_KAFKA_CACHE (default ~/.cache/sagaz)
#   JAVA           (default java)
set -euo pipefail

KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
LOG4J_VERSION=${LOG4J_VERSION:-2.24.3}
CACHE=${SAGAZ_KAFKA_CACHE:-$HOME/.cache/sagaz}/kafka-$KAFKA_VERSION
JAVA=${JAVA:-java}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${2:-$ROOT/.cache/kafka-local}

log() { printf 'kafka-local: %s\n' "$*" >&2; }

fetch() {
  if [ -f "$CACHE/lib/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "mvn not found (install Maven)"; exit 1; }
  mkdir -p "$CACHE"
  cat > "$CACHE/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.sagaz</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $CACHE"
  rm -rf "$CACHE/lib"
  mvn -q -B -f "$CACHE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$CACHE/lib" >&2
  touch "$CACHE/lib/.complete"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

addr() { cat "$DIR/addr"; }

running() { [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; }

write_config() {
  local port=$1 cport=$2
  mkdir -p "$DIR/data"
  cat > "$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DIR/data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  cat > "$DIR/log4j2.properties" <<L4J
rootLogger.level=WARN
rootLogger.appenderRef.out.ref=OUT
appender.out.type=Console
appender.out.name=OUT
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
L4J
  echo "127.0.0.1:$port" > "$DIR/addr"
}

launch() {
  local cp="$CACHE/lib/*"
  local port=${1#*:}
  nohup "$JAVA" -Xms256m -Xmx1g -Dlog4j2.configurationFile="$DIR/log4j2.properties" -cp "$cp" kafka.Kafka "$DIR/server.properties" \
    > "$DIR/broker.log" 2>&1 &
  echo $! > "$DIR/pid"
  # Wait until the broker accepts connections and answers metadata.
  for _ in $(seq 1 600); do
    if ! running; then log "broker exited; see $DIR/broker.log"; tail -20 "$DIR/broker.log" >&2; exit 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      if ! command -v kcat >/dev/null || kcat -b "127.0.0.1:$port" -L -m 2 >/dev/null 2>&1; then
        return 0
      fi
    fi
    sleep 0.1
  done
  log "broker did not answer within 60s; see $DIR/broker.log"
  stop
  exit 1
}

start() {
  fetch
  if running; then addr; return 0; fi
  command -v "$JAVA" >/dev/null || { log "java not found (Java 17+ needed)"; exit 1; }
  rm -rf "$DIR"
  mkdir -p "$DIR"
  local port cport
  port=$(free_port); cport=$(free_port)
  while [ "$cport" = "$port" ]; do cport=$(free_port); done
  write_config "$port" "$cport"
  local id
  id=$("$JAVA" -cp "$CACHE/lib/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
  "$JAVA" -Dlog4j2.configurationFile="$DIR/log4j2.properties" -cp "$CACHE/lib/*" kafka.tools.StorageTool format -t "$id" -c "$DIR/server.properties" >"$DIR/format.log" 2>&1 \
    || { log "format failed:"; cat "$DIR/format.log" >&2; exit 1; }
  local t0=$SECONDS
  launch "$(addr)"
  log "broker up on $(addr) in $((SECONDS - t0))s (data in $DIR)"
  addr
}

stop() {
  if ! [ -f "$DIR/pid" ]; then return 0; fi
  local pid
  pid=$(cat "$DIR/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/pid"
}

restart() {
  stop
  launch "$(addr)"
  log "broker restarted on $(addr)"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  resume) launch "$(addr)"; log "broker resumed on $(addr)" ;;
  addr) addr ;;
  *) echo "usage: $0 fetch|start|stop|restart|resume|addr [DIR]" >&2; exit 2 ;;
esac
