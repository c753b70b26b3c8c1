#!/usr/bin/env bash
# Starts the real servers recon's tests and demo talk to, on loopback:
#   PostgreSQL (Debian's package, our own cluster), Apache Kafka (KRaft,
#   one combined broker+controller, assembled from Maven Central jars) and a
#   schema registry (Apicurio Registry, Maven Central's runnable app, in-memory
#   storage, serving the Confluent-compatible API at /apis/ccompat/v7).
# Usage: scripts/services.sh up|status|down|registry-up|registry-down
# Idempotent: `up` twice leaves running servers alone. Fails loudly with the
# server's log tail when one does not come up.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${RECON_SERVICES_DIR:-/var/tmp/recon-services}
CACHE=${RECON_CACHE_DIR:-$HOME/.cache/recon}
PG_PORT=${RECON_PG_PORT:-5432}
KAFKA_PORT=${RECON_KAFKA_PORT:-9092}
CONTROLLER_PORT=${RECON_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")
JARS=$CACHE/kafka-$KAFKA_VERSION/jars
REGISTRY_PORT=${RECON_REGISTRY_PORT:-8081}
REGISTRY_VERSION=2.6.13.Final
REGISTRY_APP=$CACHE/apicurio-registry-$REGISTRY_VERSION
# What the tests and configs give as schema_registry.url.
REGISTRY_API=/apis/ccompat/v7

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds logfile name
  local i
  for ((i = 0; i < $2 * 4; i++)); do
    port_open "$1" && return 0
    sleep 0.25
  done
  echo "---- last lines of $3 ----" >&2
  tail -n 60 "$3" >&2 || true
  die "$4 did not accept connections on 127.0.0.1:$1 within $2 s"
}

http_ok() { # port path: the server answers 200 (plain bash: no curl needed)
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    read -r -t 5 status_line <&3 || exit 1
    [[ $status_line == HTTP/*" 200"* ]]
  ) 2>/dev/null
}

pg_bin() {
  local v
  v=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$v" ] && echo "/usr/lib/postgresql/$v/bin"
}

pg_install() {
  if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  fi
}

pg_up() {
  pg_install
  local bin data logf
  bin=$(pg_bin)
  data=$STATE/pg/data
  logf=$STATE/pg/postgres.log
  mkdir -p "$STATE/pg"
  chown postgres "$STATE/pg"
  if port_open "$PG_PORT"; then
    log "PostgreSQL already listening on 127.0.0.1:$PG_PORT"
  else
    if [ ! -f "$data/PG_VERSION" ]; then
      su postgres -c "$bin/initdb -D '$data' -U postgres -A trust -E UTF8 --locale=C.UTF-8" >/dev/null
    fi
    su postgres -c "$bin/pg_ctl -D '$data' -l '$logf' -w -t 60 \
      -o \"-c listen_addresses=127.0.0.1 -p $PG_PORT -k /tmp -c fsync=off \
          -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
          -c shared_buffers=256MB\" start" >/dev/null \
      || { tail -n 60 "$logf" >&2; die "PostgreSQL did not start"; }
    wait_port "$PG_PORT" 60 "$logf" PostgreSQL
  fi
  local psql=("$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
  if [ "$("${psql[@]}" -c "select 1 from pg_roles where rolname='recon'")" != 1 ]; then
    "${psql[@]}" -c "create role recon login superuser"
  fi
  if [ "$("${psql[@]}" -c "select 1 from pg_database where datname='recon'")" != 1 ]; then
    "${psql[@]}" -c "create database recon owner recon"
  fi
  log "PostgreSQL $("${psql[@]}" -c 'show server_version') on 127.0.0.1:$PG_PORT (role recon, database recon)"
}

pg_down() {
  local bin
  bin=$(pg_bin) || true
  if [ -n "$bin" ] && [ -f "$STATE/pg/data/postmaster.pid" ]; then
    su postgres -c "$bin/pg_ctl -D '$STATE/pg/data' -m fast -w stop" >/dev/null || true
    log "PostgreSQL stopped"
  fi
}

kafka_jars() {
  if [ ! -f "$JARS/.complete" ]; then
    command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars"
    log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $JARS"
    rm -rf "$JARS"
    mkdir -p "$JARS"
    mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$JARS" \
      || die "mvn could not fetch the Kafka jars"
    touch "$JARS/.complete"
  fi
}

kafka_up() {
  local dir=$STATE/kafka
  if port_open "$KAFKA_PORT"; then
    log "Kafka already listening on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  kafka_jars
  # A fresh data directory per start: tests plant topics with fixed names.
  rm -rf "$dir"
  mkdir -p "$dir/data"
  sed -e "s#@DATA@#$dir/data#" -e "s#@PORT@#$KAFKA_PORT#g" \
      -e "s#@CPORT@#$CONTROLLER_PORT#g" "$HERE/kafka/server.properties" >"$dir/server.properties"
  local java_opts=(-Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties" "-Dkafka.logs.dir=$dir")
  java "${java_opts[@]}" -cp "$JARS/*" kafka.tools.StorageTool format --standalone \
    -t "$(java -cp "$JARS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)" \
    -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; die "Kafka storage format failed"; }
  nohup java "${java_opts[@]}" -cp "$JARS/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/kafka.out" 2>&1 &
  echo $! >"$dir/kafka.pid"
  wait_port "$KAFKA_PORT" 90 "$dir/kafka.out" Kafka
  log "Kafka $KAFKA_VERSION (KRaft) on 127.0.0.1:$KAFKA_PORT, data in $dir/data"
}

kafka_down() {
  local pidf=$STATE/kafka/kafka.pid
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    kill "$(cat "$pidf")"
    for _ in $(seq 1 60); do kill -0 "$(cat "$pidf")" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$(cat "$pidf")" 2>/dev/null || true
    log "Kafka stopped"
  fi
  rm -f "$pidf"
}

registry_app() {
  if [ ! -f "$REGISTRY_APP/.complete" ]; then
    command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Apicurio Registry"
    log "fetching Apicurio Registry $REGISTRY_VERSION from Maven Central into $REGISTRY_APP"
    rm -rf "$REGISTRY_APP"
    mkdir -p "$REGISTRY_APP"
    # Run from the cache: without a pom, the plugin writes its markers under the
    # working directory's literal ${project.basedir}/target (so they land in the cache).
    (cd "$REGISTRY_APP" && mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:2.8:unpack \
      "-Dartifact=io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
      -DoutputDirectory="$REGISTRY_APP") \
      || die "mvn could not fetch Apicurio Registry"
    touch "$REGISTRY_APP/.complete"
  fi
}

registry_up() {
  local dir=$STATE/registry
  if http_ok "$REGISTRY_PORT" "$REGISTRY_API/config"; then
    log "schema registry already answering on 127.0.0.1:$REGISTRY_PORT"
    return 0
  fi
  port_open "$REGISTRY_PORT" && die "127.0.0.1:$REGISTRY_PORT is taken by something that is not a schema registry"
  registry_app
  mkdir -p "$dir"
  # In-memory storage (the app's default): a fresh, empty registry per start, like Kafka's
  # data. Both Quarkus listeners on loopback only.
  nohup java -Xmx256m -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dquarkus.http.host=127.0.0.1 "-Dquarkus.http.port=$REGISTRY_PORT" \
    -Dquarkus.management.host=127.0.0.1 \
    -jar "$REGISTRY_APP/apicurio-registry-app-$REGISTRY_VERSION-runner.jar" \
    >"$dir/registry.out" 2>&1 &
  echo $! >"$dir/registry.pid"
  local i start=$SECONDS
  for ((i = 0; i < 90 * 4; i++)); do
    http_ok "$REGISTRY_PORT" "$REGISTRY_API/config" && break
    kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null || break
    sleep 0.25
  done
  if ! http_ok "$REGISTRY_PORT" "$REGISTRY_API/config"; then
    echo "---- last lines of $dir/registry.out ----" >&2
    tail -n 60 "$dir/registry.out" >&2 || true
    die "the schema registry did not answer on 127.0.0.1:$REGISTRY_PORT$REGISTRY_API within 90 s"
  fi
  log "Apicurio Registry $REGISTRY_VERSION on http://127.0.0.1:$REGISTRY_PORT$REGISTRY_API (up in $((SECONDS - start)) s)"
}

registry_down() {
  local pidf=$STATE/registry/registry.pid
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    kill "$(cat "$pidf")"
    for _ in $(seq 1 60); do kill -0 "$(cat "$pidf")" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$(cat "$pidf")" 2>/dev/null || true
    log "schema registry stopped"
  fi
  rm -f "$pidf"
}

status() {
  local rc=0
  if port_open "$PG_PORT"; then log "PostgreSQL: up on 127.0.0.1:$PG_PORT"; else log "PostgreSQL: down"; rc=1; fi
  if port_open "$KAFKA_PORT"; then log "Kafka: up on 127.0.0.1:$KAFKA_PORT"; else log "Kafka: down"; rc=1; fi
  if http_ok "$REGISTRY_PORT" "$REGISTRY_API/config"; then
    log "schema registry: up on http://127.0.0.1:$REGISTRY_PORT$REGISTRY_API"
  else
    log "schema registry: down"; rc=1
  fi
  return $rc
}

case "${1:-}" in
  up) pg_up; kafka_up; registry_up ;;
  down) registry_down; kafka_down; pg_down ;;
  status) status ;;
  kafka-up) kafka_up ;;
  kafka-down) kafka_down ;;
  registry-up) registry_up ;;
  registry-down) registry_down ;;
  *) echo "usage: $0 up|status|down|kafka-up|kafka-down|registry-up|registry-down" >&2; exit 2 ;;
esac
