#!/usr/bin/env bash
# deploy/synapse.sh: a local Synapse on loopback for coi-bridge's Matrix side (tests and demos).
#
#   synapse.sh up       install matrix-synapse + matrix-nio into the venv if missing, write the
#                       config and the appservice registration, start Synapse daemonized, wait for
#                       /health, create the test users @alice:matrix.test / alicepass and @dan:matrix.test / danpass
#   synapse.sh down     stop Synapse (SIGTERM to its pid, wait for exit)
#   synapse.sh status   exit 0 when Synapse answers /health
#   synapse.sh env      shell exports for tests:  eval "$(deploy/synapse.sh env)"
#
# Follows /work/shared/research/mx-xmpp-spike.md §1: server_name matrix.test, 127.0.0.1:8008,
# client API only, SQLite, federation off, relaxed rc_* limits, shared-secret registration,
# one appservice (id coi) with fixed test tokens whose url is the bridge's listener.
# Environment (all optional):
#   COI_STACK_DIR  state dir; Synapse lives in $COI_STACK_DIR/synapse   (/var/tmp/coi-stack)
#   COI_VENV       Python venv                                          (/root/.cache/coi-venv)
#   COI_MATRIX_AS_URL  where Synapse reaches the bridge                 (http://127.0.0.1:29331)
# Safe to run repeatedly; the registration is rewritten (and Synapse restarted) only when it changes.
set -euo pipefail

STATE="${COI_STACK_DIR:-/var/tmp/coi-stack}"
VENV="${COI_VENV:-/root/.cache/coi-venv}"
DIR="$STATE/synapse"
DATA="$DIR/data"
PIDF="$DATA/homeserver.pid"
SERVER_NAME=matrix.test
HS_URL=http://127.0.0.1:8008
AS_URL="${COI_MATRIX_AS_URL:-http://127.0.0.1:29331}"
AS_ID=coi
AS_TOKEN=coi_test_as_token_0123456789abcdef
HS_TOKEN=coi_test_hs_token_fedcba9876543210
BOT=coi_bot
PREFIX=_coi_
REG="$DIR/appservice-coi.yaml"

log() { echo "synapse.sh: $*" >&2; }

healthy() { curl -sf -m 2 "$HS_URL/health" >/dev/null 2>&1; }

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c 'import synapse, nio' 2>/dev/null; then
    log "installing matrix-synapse and matrix-nio into $VENV"
    "$VENV/bin/pip" install -q matrix-synapse matrix-nio
  fi
}

write_registration() {
  local tmp="$REG.new"
  cat >"$tmp" <<YAML
# coi-bridge appservice registration for the local test Synapse (fixed test tokens)
id: "$AS_ID"
url: "$AS_URL"
as_token: "$AS_TOKEN"
hs_token: "$HS_TOKEN"
sender_localpart: "$BOT"
rate_limited: false
receive_ephemeral: true
de.sorunome.msc2409.push_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: "@${PREFIX}.*:matrix\\\\.test"
  aliases:
    - exclusive: true
      regex: "#${PREFIX}.*:matrix\\\\.test"
  rooms: []
YAML
  if [ -f "$REG" ] && cmp -s "$tmp" "$REG"; then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$REG"
  return 0
}

configure() {
  mkdir -p "$DIR" "$DATA"   # --generate-config does not create the data dir (trap S2)
  if [ ! -f "$DIR/homeserver.generated.yaml" ]; then
    log "generating keys and secrets"
    (cd "$DIR" && "$VENV/bin/python" -m synapse.app.homeserver --server-name "$SERVER_NAME" \
      --config-path "$DIR/homeserver.generated.yaml" --generate-config --report-stats=no \
      --data-directory "$DATA" >/dev/null)
  fi
  local secret macaroon form
  secret=$(sed -n 's/^registration_shared_secret: *//p' "$DIR/homeserver.generated.yaml")
  macaroon=$(sed -n 's/^macaroon_secret_key: *//p' "$DIR/homeserver.generated.yaml")
  form=$(sed -n 's/^form_secret: *//p' "$DIR/homeserver.generated.yaml")
  local rc='{per_second: 1000, burst_count: 10000}'
  cat >"$DIR/homeserver.yaml.new" <<YAML
# coi-bridge test Synapse (written by deploy/synapse.sh; edits are overwritten)
server_name: "$SERVER_NAME"
public_baseurl: "$HS_URL/"
pid_file: $PIDF
listeners:
  - port: 8008
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: $DATA/homeserver.db
log_config: "$DIR/$SERVER_NAME.log.config"
media_store_path: $DATA/media_store
signing_key_path: "$DIR/$SERVER_NAME.signing.key"
report_stats: false
enable_registration: false
registration_shared_secret: $secret
macaroon_secret_key: $macaroon
form_secret: $form
federation_domain_whitelist: []
trusted_key_servers: []
suppress_key_server_warning: true
allow_public_rooms_over_federation: false
app_service_config_files:
  - $REG
rc_message: $rc
rc_registration: $rc
rc_registration_token_validity: $rc
rc_login:
  address: $rc
  account: $rc
  failed_attempts: $rc
rc_joins:
  local: $rc
  remote: $rc
rc_joins_per_room: $rc
rc_invites:
  per_room: $rc
  per_user: $rc
  per_issuer: $rc
rc_3pid_validation: $rc
rc_media_create: $rc
rc_presence:
  per_user: $rc
rc_room_creation: $rc
rc_admin_redaction: $rc
rc_profile: $rc
rc_delayed_event_mgmt: $rc
rc_key_requests: $rc
rc_reports: $rc
rc_user_directory: $rc
url_preview_enabled: false
enable_metrics: false
max_upload_size: 50M
YAML
  local changed=1
  if [ -f "$DIR/homeserver.yaml" ] && cmp -s "$DIR/homeserver.yaml.new" "$DIR/homeserver.yaml"; then
    rm -f "$DIR/homeserver.yaml.new"; changed=0
  else
    mv "$DIR/homeserver.yaml.new" "$DIR/homeserver.yaml"
  fi
  if write_registration; then changed=1; fi
  return $((1 - changed))
}

running_pid() {
  [ -f "$PIDF" ] || return 1
  local pid; pid=$(cat "$PIDF")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop() {
  local pid
  if ! pid=$(running_pid); then log "not running"; return 0; fi
  kill "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "Synapse ($pid) did not stop"; return 1; fi
  log "Synapse ($pid) stopped"
}

start() {
  local t0; t0=$(date +%s.%N)
  (cd "$DIR" && "$VENV/bin/python" -m synapse.app.homeserver -c "$DIR/homeserver.yaml" --daemonize)
  for _ in $(seq 1 600); do healthy && break; sleep 0.1; done
  if ! healthy; then log "Synapse did not answer /health; see $DIR/homeserver.log"; return 1; fi
  log "Synapse up after $(echo "$(date +%s.%N) - $t0" | bc)s"
}

ensure_user() {
  local user=$1 pass=$2 out
  if out=$("$VENV/bin/register_new_matrix_user" -c "$DIR/homeserver.yaml" -u "$user" -p "$pass" --no-admin "$HS_URL" 2>&1); then
    log "created @$user:$SERVER_NAME"
  elif echo "$out" | grep -q 'User ID already taken'; then
    :
  else
    log "cannot create @$user: $out"; return 1
  fi
}

cmd="${1:-}"
case "$cmd" in
  up)
    install
    if configure; then changed=1; else changed=0; fi
    if running_pid >/dev/null; then
      if [ "$changed" = 1 ]; then log "config changed; restarting"; stop; start; fi
    else
      start
    fi
    ensure_user alice alicepass
    # A second Matrix person for the tests (joins, leaves, benchmarks' user -> user baseline).
    ensure_user dan danpass
    log "ready: $HS_URL  user @alice:$SERVER_NAME / alicepass (and @dan / danpass)  appservice url $AS_URL"
    ;;
  down) stop ;;
  status)
    if healthy; then echo "synapse: up ($HS_URL, pid $(running_pid || echo '?'))"; else echo "synapse: down"; exit 1; fi
    ;;
  env)
    cat <<ENV
export COI_MATRIX_HS_URL=$HS_URL
export COI_MATRIX_SERVER_NAME=$SERVER_NAME
export COI_MATRIX_AS_ID=$AS_ID
export COI_MATRIX_AS_TOKEN=$AS_TOKEN
export COI_MATRIX_HS_TOKEN=$HS_TOKEN
export COI_MATRIX_AS_URL=$AS_URL
export COI_MATRIX_BOT=$BOT
export COI_MATRIX_PREFIX=$PREFIX
export COI_MATRIX_REGISTRATION=$REG
export COI_PYTHON=$VENV/bin/python
ENV
    ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
