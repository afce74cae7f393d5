#!/usr/bin/env bash
# Start the services Lifeboat's tests need, installing them first if missing:
#   - PostgreSQL 15 with wal_level=logical   (port 54329, LIFEBOAT_TEST_PG_PORT)
#   - PostgreSQL 15 with wal_level=replica   (port 54330, LIFEBOAT_TEST_PG_REPLICA_PORT)
#   - PostgreSQL 15 with wal_level=logical, TLS only, client certificates required
#     (port 54331, LIFEBOAT_TEST_PG_TLS_PORT); its CA, server and client certificates
#     are made here with openssl, the server's for the name localhost only
#   - moto's S3 server with bucket lifeboat-test (port 54340, LIFEBOAT_TEST_S3_PORT)
#   - Chromium, for the status pages' browser test (Debian's package)
#   - ssh-keygen (openssh-client), for the guard's signature tests
# Everything lives under $LIFEBOAT_TEST_DIR (default: <repo>/.lifeboat-test). Running it
# again reuses what already runs. The environment for the tests is printed and written to
# $LIFEBOAT_TEST_DIR/env.sh.
#
#   scripts/test-services.sh         start (idempotent)
#   scripts/test-services.sh stop    stop the clusters and moto
set -euo pipefail
# The clusters this run started (the others were running already).
started_now=""

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEST_DIR="${LIFEBOAT_TEST_DIR:-$REPO/.lifeboat-test}"
PG_PORT="${LIFEBOAT_TEST_PG_PORT:-54329}"
PG_REPLICA_PORT="${LIFEBOAT_TEST_PG_REPLICA_PORT:-54330}"
PG_TLS_PORT="${LIFEBOAT_TEST_PG_TLS_PORT:-54331}"
S3_PORT="${LIFEBOAT_TEST_S3_PORT:-54340}"
BUCKET=lifeboat-test
PG_BIN=/usr/lib/postgresql/15/bin
export DEBIAN_FRONTEND=noninteractive

log() { echo "test-services: $*" >&2; }
die() { log "error: $*"; exit 1; }

# initdb and postgres refuse to run as root: run them as the postgres OS user then.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

apt_updated=""
apt_install() {
    [[ $(id -u) -eq 0 ]] || die "$* missing and not root: install it with apt-get install $*"
    if [[ -z $apt_updated ]]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Where the clusters live: inside the test dir, unless the postgres user cannot reach it
# (a checkout under /root, say); then in a fixed spot under /tmp derived from it.
pg_root() {
    if [[ $(id -u) -ne 0 ]] || runuser -u postgres -- test -x "$TEST_DIR" 2>/dev/null; then
        echo "$TEST_DIR"
    else
        echo "/tmp/lifeboat-test-$(echo -n "$TEST_DIR" | md5sum | cut -c1-12)"
    fi
}

# make_certificates DIR: a CA, a server certificate for localhost and a client certificate
# for the user postgres signed by it, and a second CA that signed nothing (once).
make_certificates() {
    local tls=$1
    [[ -f $tls/client.pem ]] && return
    command -v openssl >/dev/null || apt_install openssl
    mkdir -p "$tls"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 3650 -subj "/CN=Lifeboat test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -x509 "${ec[@]}" -days 3650 -subj "/CN=Another CA" \
        -keyout "$tls/other-ca.key" -out "$tls/other-ca.pem" 2>/dev/null
    openssl req "${ec[@]}" -subj "/CN=localhost" -keyout "$tls/server.key" \
        -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\n' >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 3650 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
    openssl req "${ec[@]}" -subj "/CN=postgres" -keyout "$tls/client.key" \
        -out "$tls/client.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >"$tls/client.ext"
    openssl x509 -req -in "$tls/client.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 3650 -extfile "$tls/client.ext" -out "$tls/client.pem" 2>/dev/null
    chmod 600 "$tls"/*.key
}

# pg_start NAME PORT WAL_LEVEL [tls]: create the cluster once, then start it unless it
# runs. With tls, it accepts only TLS connections that present a client certificate.
pg_start() {
    local name=$1 port=$2 wal_level=$3 tls=${4:-}
    local dir
    dir="$(pg_root)/$name"
    local data="$dir/data"

    if [[ ! -f $data/PG_VERSION ]]; then
        log "creating cluster $name in $data"
        rm -rf "$dir"
        mkdir -p "$dir"
        [[ $(id -u) -ne 0 ]] || chown postgres:postgres "$dir"
        as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 \
            --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; die "initdb failed for $name"; }
        # Trust local and 127.0.0.1 connections, normal and replication (for the TLS
        # cluster: TLS only, with a client certificate signed by the test CA).
        if [[ -n $tls ]]; then
            as_pg tee "$data/pg_hba.conf" >/dev/null <<EOF
local   all         all              trust
local   replication all              trust
hostssl all         all 127.0.0.1/32 trust clientcert=verify-ca
hostssl replication all 127.0.0.1/32 trust clientcert=verify-ca
EOF
        else
            as_pg tee "$data/pg_hba.conf" >/dev/null <<EOF
local all         all              trust
local replication all              trust
host  all         all 127.0.0.1/32 trust
host  replication all 127.0.0.1/32 trust
EOF
        fi
        echo "include 'lifeboat.conf'" | as_pg tee -a "$data/postgresql.conf" >/dev/null
    fi

    # The socket path must stay under ~107 bytes: fall back to /tmp for deep checkouts.
    local sockets="$dir"
    if (( ${#sockets} > 90 )); then
        sockets="/tmp"
    fi
    # Rewritten on every start, so changed ports take effect. Durability stays real (no fsync=off).
    as_pg tee "$data/lifeboat.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sockets'
wal_level = $wal_level
max_replication_slots = 64
max_wal_senders = 64
max_connections = 300
EOF
    if [[ -n $tls ]]; then
        # The server's copies of its key and certificates, owned by its user.
        install -m 600 -o "$(stat -c %U "$data")" "$TEST_DIR/tls/server.key" "$data/server.key"
        install -m 644 -o "$(stat -c %U "$data")" "$TEST_DIR/tls/server.pem" \
            "$TEST_DIR/tls/ca.pem" "$data/"
        as_pg tee -a "$data/lifeboat.conf" >/dev/null <<EOF
ssl = on
ssl_cert_file = 'server.pem'
ssl_key_file = 'server.key'
ssl_ca_file = 'ca.pem'
EOF
    fi

    if as_pg "$PG_BIN/pg_ctl" status -D "$data" >/dev/null 2>&1; then
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
            log "cluster $name already running on port $port"
            return
        fi
        log "cluster $name runs but does not answer on port $port: restarting it"
        as_pg "$PG_BIN/pg_ctl" stop -D "$data" -m fast -w >/dev/null
    fi
    log "starting cluster $name on port $port"
    started_now+=" $name"
    as_pg "$PG_BIN/pg_ctl" start -D "$data" -l "$dir/server.log" -w -t 60 >/dev/null ||
        { tail -20 "$dir/server.log" >&2; die "cluster $name did not start (log: $dir/server.log)"; }
    for _ in $(seq 60); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" && return
        sleep 0.5
    done
    die "cluster $name does not answer on port $port (log: $dir/server.log)"
}

pg_stop() {
    local data
    data="$(pg_root)/$1/data"
    if [[ -f $data/postmaster.pid ]] && as_pg "$PG_BIN/pg_ctl" status -D "$data" >/dev/null 2>&1; then
        log "stopping cluster $1"
        as_pg "$PG_BIN/pg_ctl" stop -D "$data" -m fast -w >/dev/null
    fi
}

# Exit 0 when something answers HTTP on the moto port.
s3_answers() {
    python3 - "$S3_PORT" <<'EOF' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2)
except urllib.error.HTTPError:
    pass  # an HTTP error is still an answer
EOF
}

# The pid in moto.pid, if that process is still our moto server.
moto_pid() {
    local pid
    pid=$(cat "$TEST_DIR/moto.pid" 2>/dev/null) || return 1
    [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q moto.server && echo "$pid"
}

moto_start() {
    if ! python3 -c 'import moto.server' 2>/dev/null; then
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        log "pip install moto[server]"
        # PIP_BREAK_SYSTEM_PACKAGES: Debian's own python3 refuses pip installs without it.
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
            --root-user-action=ignore 'moto[server]'
    fi
    if moto_pid >/dev/null && s3_answers; then
        log "moto already running on port $S3_PORT"
    else
        log "starting moto on port $S3_PORT"
        # setsid + nohup: the server outlives this script.
        setsid nohup python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT" \
            >"$TEST_DIR/moto.log" 2>&1 </dev/null &
        echo $! >"$TEST_DIR/moto.pid"
        for _ in $(seq 60); do
            s3_answers && break
            moto_pid >/dev/null || { tail -20 "$TEST_DIR/moto.log" >&2; die "moto exited"; }
            sleep 0.5
        done
        s3_answers || die "moto does not answer on port $S3_PORT (log: $TEST_DIR/moto.log)"
    fi
    # moto keeps buckets in memory: (re)create ours. 409 = it exists already.
    python3 - "$S3_PORT" "$BUCKET" <<'EOF' || die "cannot create bucket $BUCKET"
import sys, urllib.request, urllib.error
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/{sys.argv[2]}", method="PUT")
try:
    urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as e:
    if e.code != 409:
        raise
EOF
}

moto_stop() {
    local pid
    if pid=$(moto_pid); then
        log "stopping moto (pid $pid)"
        kill "$pid"
        for _ in $(seq 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
    fi
    rm -f "$TEST_DIR/moto.pid"
}

if [[ ${1:-start} == stop ]]; then
    if [[ -x $PG_BIN/pg_ctl ]] && getent passwd postgres >/dev/null; then
        pg_stop pg-logical
        pg_stop pg-replica
        pg_stop pg-tls
    fi
    moto_stop
    exit 0
fi
[[ ${1:-start} == start ]] || die "usage: $0 [start|stop]"

mkdir -p "$TEST_DIR"
[[ -x $PG_BIN/initdb ]] || apt_install postgresql-15
pg_start pg-logical "$PG_PORT" logical
pg_start pg-replica "$PG_REPLICA_PORT" replica
make_certificates "$TEST_DIR/tls"
pg_start pg-tls "$PG_TLS_PORT" logical tls
# Slots left by earlier runs (a test killed half way) hold WAL until the disk fills. When
# the server was just started, no inactive slot belongs to anything still running; when it
# was already running, an inactive slot may be a test's or a benchmark's between two
# captures, so only one holding back more than 4 GB of WAL is dropped.
stale="NOT active"
[[ $started_now == *" pg-logical"* ]] ||
    stale="NOT active AND pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) > 4 * 1024^3"
"$PG_BIN/psql" -qAt -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE $stale" \
    >/dev/null || log "could not drop stale replication slots"

moto_start
# The notification tests start their own SMTP servers (tests/it/smtp_sink.py) with aiosmtpd.
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
    log "pip install aiosmtpd"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
        --root-user-action=ignore aiosmtpd
fi
command -v chromium >/dev/null || apt_install chromium
# tests/it/browser.py clicks and downloads in Chromium through its DevTools protocol.
if ! python3 -c 'import websocket' 2>/dev/null; then
    log "pip install websocket-client"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
        --root-user-action=ignore websocket-client
fi
# Pages in Japanese are screenshotted: a font with its characters.
[[ -e /usr/share/fonts/opentype/ipafont-gothic/ipag.ttf ]] || apt_install fonts-ipafont-gothic
# The guard's tests make SSH keys and signatures with ssh-keygen.
command -v ssh-keygen >/dev/null || apt_install openssh-client

cat >"$TEST_DIR/env.sh" <<EOF
export LIFEBOAT_TEST_PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export LIFEBOAT_TEST_PG_REPLICA_URL=postgres://postgres@127.0.0.1:$PG_REPLICA_PORT/postgres
export LIFEBOAT_TEST_PG_TLS_PORT=$PG_TLS_PORT
export LIFEBOAT_TEST_TLS_DIR=$TEST_DIR/tls
export LIFEBOAT_TEST_S3_BUCKET=$BUCKET
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
export LIFEBOAT_TEST_CHROMIUM=$(command -v chromium)
EOF
log "ready; the tests' environment ($TEST_DIR/env.sh):"
cat "$TEST_DIR/env.sh"
