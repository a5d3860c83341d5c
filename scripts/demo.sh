#!/usr/bin/env bash
# The demo behind `make demo` (docs/demo.md). On one machine, with
# nothing but private processes on loopback, it starts:
#
#   - a RabbitMQ node (scripts/rabbitmq.sh) and a Keystone (sqlite, a
#     threaded WSGI server), both private to this run;
#   - the attestation service (trustpool-attestation, sqlite in a temp dir);
#   - three "compute hosts": each a swtpm manufactured with an EK certificate
#     by one demo vendor CA, "booted" with a realistic firmware event log and
#     IMA list (tests/cmd/tpm-boot-seed), and a trustpool-agent on it.
#
# Then it tells the story with the `trustpool` command line client (built
# into bin/trustpool), showing each command as a user would type it: the
# agents enroll (credential activation); a profile is learned from the first
# host; all three hosts are trusted; a PCR is extended behind the event log's
# back on the second host, which turns untrusted with its reason; the third
# host's agent is stopped and the host becomes unreachable; a project member
# is refused the operator's data but verifies a signed verdict offline. Then
# the tenant's act, trusted launch: the member seals a secret to the
# service's pinned launch key for an instance on the trusted host, it is
# delivered into the instance, the signed receipt verifies and the
# instance's proof checks; a launch aimed at the tampered host is refused
# with its reason, and its signed receipt says so. The operator rolls out
# the next build: its event log (from a fourth swtpm, the build pipeline's
# reference machine) becomes a candidate version of the profile, diffed,
# a canary on compute-1, then approved; retiring the version compute-1
# still matches is refused without --force. Last, the delivered instance
# "restarts" (its secret file is removed) and the tenant has the secret
# re-delivered after a fresh attestation, with a new receipt; then the
# instance stops and starts again and its agent asks for the re-delivery
# itself. (There is no Nova here:
# an "instance" is a directory the agent's directory injector writes into.)
# The CLI authenticates with a clouds.yaml the demo writes (and prints); the
# attestation endpoint is registered in Keystone's catalog with
# python-openstackclient.
#
# Everything it started is stopped on exit; each run starts afresh. On a
# terminal it waits for Enter before stopping, so that you can try
# bin/trustpool yourself (DEMO_WAIT=0 never waits, DEMO_WAIT=1 always does).
#
# `scripts/demo.sh echo` runs the older messaging-only demo instead (a Go
# oslo.messaging RPC server called by Go and Python clients).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=/usr/bin/python3 # the interpreter with the Debian python3-* packages
WORK=$(mktemp -d -t trustpool-demo-XXXXXX)
PIDS=()
cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  scripts/rabbitmq.sh stop "$WORK/rabbitmq" || true
  if [[ -n ${KEEP_DEMO_DIR:-} ]]; then
    echo "demo files kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n==> %s\n' "$*"; }
die() {
  echo "demo: $*" >&2
  exit 1
}

free_port() { # a port in 10000-32000 that nothing listens on
  local p
  for _ in $(seq 200); do
    p=$((10000 + RANDOM % 22000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
      ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

start_rabbitmq() {
  step "starting a private RabbitMQ node on 127.0.0.1 (about 10 s)"
  eval "$(scripts/rabbitmq.sh start "$WORK/rabbitmq")"
  echo "transport_url = $TRANSPORT_URL"
}

# ---------------------------------------------------------------- echo demo

echo_demo() {
  start_rabbitmq
  step "building tests/cmd/oslo-peer"
  go build -o "$WORK/oslo-peer" ./tests/cmd/oslo-peer

  local peer=("$WORK/oslo-peer")
  local common=(--transport-url "$TRANSPORT_URL" --exchange trustpool --topic trustpool-demo)

  step "starting the Go RPC server: oslo-peer serve --topic trustpool-demo --server demo-host"
  "${peer[@]}" serve "${common[@]}" --server demo-host > "$WORK/serve.log" 2>&1 &
  PIDS+=($!)
  wait_for 30 "the echo server" grep -q '^ready' "$WORK/serve.log"

  step "Go client -> Go server: echo(value)"
  "${peer[@]}" call "${common[@]}" --method echo --args '{"value": {"hello": "from Go", "n": 42, "list": [1.5, true, null]}}'

  step "Go client -> Go server, directed to server demo-host: echo(value)"
  "${peer[@]}" call "${common[@]}" --server demo-host --method echo --args '{"value": "Grüße 🌍"}'

  step "Go client -> Go server: fail(kind=value) comes back as ValueError"
  "${peer[@]}" call "${common[@]}" --method fail --args '{"kind": "value", "message": "demo failure"}' || true

  if [[ -f tests/interop/py/caller.py ]]; then
    step "Python oslo.messaging client -> Go server: echo and fail"
    printf '%s\n' \
      '{"method": "echo", "args": {"value": "hello from Python oslo.messaging"}}' \
      '{"method": "fail", "args": {"kind": "value", "message": "raised in Go"}}' |
      "$PYTHON" tests/interop/py/caller.py --transport-url "$TRANSPORT_URL" --exchange trustpool --topic trustpool-demo
  fi
  step "done; stopping the server and the broker"
}

# ---------------------------------------------------------------- Keystone

KS_PASSWORD=trustpool-demo-admin
start_keystone() {
  step "starting a private Keystone (sqlite) on 127.0.0.1 (about 15 s)"
  local ks=$WORK/keystone port
  mkdir -p "$ks/fernet-keys" "$ks/credential-keys"
  chmod 700 "$ks/fernet-keys" "$ks/credential-keys"
  port=$(free_port)
  KS_URL=http://127.0.0.1:$port/v3
  cat > "$ks/keystone.conf" <<EOF
[DEFAULT]
use_stderr = true
[database]
connection = sqlite:///$ks/keystone.db
[fernet_tokens]
key_repository = $ks/fernet-keys
[fernet_receipts]
key_repository = $ks/fernet-keys
[credential]
key_repository = $ks/credential-keys
[identity]
# bcrypt cost 4: fast password checks. Demo only.
password_hash_rounds = 4
[cache]
enabled = true
backend = dogpile.cache.memory
EOF
  cat > "$ks/serve.py" <<'EOF'
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler
port = int(sys.argv[1]); sys.argv = sys.argv[:1]
from keystone.server.wsgi import initialize_public_application
class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Quiet(WSGIRequestHandler):
    def log_message(self, *a): pass
app = initialize_public_application()
make_server('127.0.0.1', port, app, server_class=Server, handler_class=Quiet).serve_forever()
EOF
  export OS_KEYSTONE_CONFIG_FILES=$ks/keystone.conf
  local km=(keystone-manage --config-file "$ks/keystone.conf")
  {
    "${km[@]}" db_sync
    # WAL: in rollback-journal mode concurrent writes deadlock.
    "$PYTHON" -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode=WAL')" "$ks/keystone.db"
    "${km[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    "${km[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    "${km[@]}" bootstrap --bootstrap-password "$KS_PASSWORD" \
      --bootstrap-username admin --bootstrap-project-name admin --bootstrap-role-name admin \
      --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
      --bootstrap-admin-url "$KS_URL/" --bootstrap-internal-url "$KS_URL/" --bootstrap-public-url "$KS_URL/"
  } > "$ks/manage.log" 2>&1 || {
    tail -n 30 "$ks/manage.log" >&2
    die "keystone-manage failed (log above)"
  }
  "$PYTHON" "$ks/serve.py" "$port" > "$ks/keystone.log" 2>&1 &
  PIDS+=($!)
  wait_for 90 "Keystone" curl -sf "$KS_URL"
  unset OS_KEYSTONE_CONFIG_FILES
  echo "Keystone: $KS_URL (user admin, project admin)"
}

# write_clouds writes the clouds.yaml the CLI (and python-openstackclient)
# read: the admin, and a member of project "demo".
DEMO_MEMBER_PASSWORD=trustpool-demo-member
write_clouds() {
  CLOUDS=$WORK/clouds.yaml
  cat > "$CLOUDS" <<EOF
clouds:
  trustpool-demo:
    auth:
      auth_url: $KS_URL
      username: admin
      password: $KS_PASSWORD
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
  trustpool-demo-member:
    auth:
      auth_url: $KS_URL
      username: demo-member
      password: $DEMO_MEMBER_PASSWORD
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
EOF
  chmod 600 "$CLOUDS"
  export OS_CLIENT_CONFIG_FILE=$CLOUDS OS_CLOUD=trustpool-demo
}

# ---------------------------------------------------------------- hosts

HOSTS=(compute-1 compute-2 compute-3)
declare -A TPM_PORT AGENT_PID

# A demo "TPM vendor": one local CA that signs the EK certificates of all
# three swtpms; the service trusts its root.
setup_vendor_ca() {
  local ca=$WORK/vendor-ca
  mkdir -p "$ca"
  chmod 700 "$ca"
  cat > "$WORK/localca.conf" <<EOF
statedir = $ca
signingkey = $ca/signkey.pem
issuercert = $ca/issuercert.pem
certserial = $ca/certserial
EOF
  cat > "$WORK/swtpm_setup.conf" <<EOF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $WORK/localca.conf
create_certs_tool_options = /etc/swtpm-localca.options
EOF
}

prepare_host() {
  local host=$1 dir=$WORK/$1 port
  mkdir -p "$dir/tpm" "$dir/logs" "$dir/state"
  swtpm_setup --tpm2 --tpmstate "$dir/tpm" --config "$WORK/swtpm_setup.conf" \
    --create-ek-cert --create-platform-cert --lock-nvram --overwrite --pcr-banks sha256 \
    > "$dir/swtpm_setup.log" 2>&1 || {
    cat "$dir/swtpm_setup.log" >&2
    die "swtpm_setup failed for $host"
  }
  port=$(free_port)
  TPM_PORT[$host]=$port
  swtpm socket --tpm2 --tpmstate "dir=$dir/tpm" \
    --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
    --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
    --flags not-need-init,startup-clear --log "file=$dir/swtpm.log,level=1" &
  PIDS+=($!)
  wait_for 30 "swtpm of $host" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
  "$WORK/bin/tpm-boot-seed" -swtpm "127.0.0.1:$port" -variant build-a \
    -log "$dir/logs/binary_bios_measurements" \
    -ima "$dir/logs/binary_runtime_measurements" -ima-files 3 > "$dir/seed.log" 2>&1 || {
    cat "$dir/seed.log" >&2
    die "tpm-boot-seed failed for $host"
  }
  cat > "$dir/agent.toml" <<EOF
[DEFAULT]
host = "$host"
transport_url = "$TRANSPORT_URL"
control_exchange = "trustpool"

[tpm]
swtpm = "127.0.0.1:$port"
event_log = "$dir/logs/binary_bios_measurements"
ima_log = "$dir/logs/binary_runtime_measurements"

[agent]
state_dir = "$dir/state"
watch_interval = "1s"
retry_initial = "500ms"
retry_max = "5s"
rpc_timeout = "5s"

[launch]
# No hypervisor here: <instances>/<instance id>/ stands for an instance.
injector = "directory"
directory = "$dir/instances"
# Short, so that the agent sees a restarted instance within a second or two
# (default 30s).
redelivery_check_interval = "1s"
EOF
  mkdir -p "$dir/instances"
  printf '  %-10s swtpm 127.0.0.1:%s, EK certificate, booted build-a\n' "$host" "$port"
}

start_agent() {
  local host=$1
  "$WORK/bin/trustpool-agent" -config-file "$WORK/$host/agent.toml" >> "$WORK/$host/agent.log" 2>&1 &
  AGENT_PID[$host]=$!
  PIDS+=($!)
}

stop_agent() {
  local host=$1
  kill -TERM "${AGENT_PID[$host]}"
  wait "${AGENT_PID[$host]}" 2>/dev/null || true
}

# ---------------------------------------------------------------- service

start_service() {
  step "starting the attestation service (sqlite in $WORK/service)"
  local dir=$WORK/service port
  mkdir -p "$dir/ek-roots"
  cp "$WORK/vendor-ca/swtpm-localca-rootca-cert.pem" "$WORK/vendor-ca/issuercert.pem" "$dir/ek-roots/"
  port=$(free_port)
  API=http://127.0.0.1:$port
  cat > "$dir/attestation.toml" <<EOF
[DEFAULT]
host = "controller"
transport_url = "$TRANSPORT_URL"
control_exchange = "trustpool"

[database]
connection = "sqlite:///$dir/attestation.db"

[keystone_authtoken]
auth_url = "$KS_URL"
auth_type = "password"
username = "admin"
password = "$KS_PASSWORD"
user_domain_name = "Default"
project_name = "admin"
project_domain_name = "Default"

[api]
listen = "127.0.0.1:$port"

[attestation]
interval = "5s"
jitter = "500ms"
quote_timeout = "3s"
nonce_lifetime = "10s"
verdict_validity = "15s"
heartbeat_interval = "5s"

[enrollment]
mode = "auto"
require_ek_cert = true
ek_roots_dir = "$dir/ek-roots"

[keys]
verdict_signing_key = "$dir/verdict-signing.key"
launch_key = "$dir/launch.key"
policy_signing_key = "$dir/policy-signing.key"
EOF
  # The service never makes its keys on its own (shims and tenants pin
  # them): create them.
  "$WORK/bin/trustpool-attestation" create-key "$dir/verdict-signing.key" | sed 's/^/  /'
  "$WORK/bin/trustpool-attestation" create-launch-key "$dir/launch.key" | sed 's/^/  /'
  "$WORK/bin/trustpool-attestation" create-policy-key "$dir/policy-signing.key" | sed 's/^/  /'
  "$WORK/bin/trustpool-attestation" -config-file "$dir/attestation.toml" > "$dir/service.log" 2>&1 &

  PIDS+=($!)
  wait_for 60 "the attestation service's /healthz" curl -sf "$API/healthz"
  echo "REST API: $API (Keystone-protected; /, /healthz, /metrics and /v1/keys are open)"
}

# register_catalog puts the attestation service in Keystone's catalog and
# adds a project member, with python-openstackclient, as an operator would.
register_catalog() {
  step "registering the attestation service in the Keystone catalog, and a member of project demo"
  local os=(openstack --os-cloud trustpool-demo)
  show_cmd openstack service create --name trustpool attestation
  "${os[@]}" service create --name trustpool --description "Trustpool attestation" attestation > /dev/null
  show_cmd openstack endpoint create --region RegionOne attestation public "$API"
  "${os[@]}" endpoint create --region RegionOne attestation public "$API" > /dev/null
  "${os[@]}" project create --domain default demo > /dev/null
  "${os[@]}" user create --domain default --project demo --password "$DEMO_MEMBER_PASSWORD" demo-member > /dev/null
  "${os[@]}" role add --project demo --user demo-member member > /dev/null
  echo "  user demo-member: role member on project demo"
}

# show_cmd prints a command as the user would type it.
show_cmd() { printf '  $ %s\n' "$*"; }

# tp runs the trustpool CLI after showing the command (OS_CLOUD is set).
tp() {
  show_cmd trustpool "$@"
  "$TRUSTPOOL" "$@"
}

# table shows the hosts as the CLI lists them.
table() { tp host list; }

# host_field HOST FIELD: one field of a host.
host_field() { "$TRUSTPOOL" host show "$1" -f value -c "$2"; }

# wait_status SECONDS HOST STATUS: wait for a host's effective status.
wait_status() {
  local secs=$1 host=$2 want=$3 deadline=$((SECONDS + $1)) got
  while :; do
    got=$(host_field "$host" status 2>/dev/null || echo error)
    [[ $got == "$want" ]] && return 0
    ((SECONDS < deadline)) || die "$host is $got after ${secs}s, expected $want (logs in $WORK; rerun with KEEP_DEMO_DIR=1)"
    sleep 0.5
  done
}

# start_instance HOST PROJECT: an "instance" of PROJECT on HOST (what a
# hypervisor would run, and the owner it records), printed as its id.
start_instance() {
  local id
  id=$(cat /proc/sys/kernel/random/uuid)
  mkdir -m 700 "$WORK/$1/instances/$id"
  printf '%s' "$2" > "$WORK/$1/instances/$id.owner"
  echo "$id"
}

# tenant_act: trusted launch, as the project member.
tenant_act() {
  local member=(--os-cloud trustpool-demo-member) project fp good bad hid_good hid_bad id_good id_bad rc proof
  step "the tenant's act: trusted launch (a secret only an attested host's TPM can unseal)"
  project=$(openstack --os-cloud trustpool-demo project show demo -f value -c id)
  echo "  the member pins the service's launch key by its fingerprint (published by the operator):"
  tp "${member[@]}" key list --use launch
  fp=$("$TRUSTPOOL" "${member[@]}" key list --use launch -f value -c Fingerprint)
  head -c 32 /dev/urandom | base64 > "$WORK/volume.key"
  chmod 600 "$WORK/volume.key"
  good=$(start_instance compute-1 "$project")
  bad=$(start_instance compute-2 "$project")
  # Nova shows the tenant each server's hostId, sha224(project_id + host).
  hid_good=$(printf '%s%s' "$project" compute-1 | sha224sum | cut -d' ' -f1)
  hid_bad=$(printf '%s%s' "$project" compute-2 | sha224sum | cut -d' ' -f1)
  echo "  instance $good runs on compute-1 (hostId $hid_good)"
  echo "  instance $bad runs on compute-2 (hostId $hid_bad), the tampered host"

  echo "  1. a launch for the instance on compute-1: sealed here, compute-1 attested afresh, sealed to its TPM, delivered"
  (cd "$WORK" && tp "${member[@]}" launch create --profile build-a --secret-file volume.key --launch-key-fingerprint "$fp" \
    --server "$good" --host-id "$hid_good" --wait --public-key verdict-key.pem -c id -c state -c instance_id -c host_id)
  id_good=$("$TRUSTPOOL" "${member[@]}" launch list -f value -c ID -c "Instance ID" | awk -v i="$good" '$2 == i {print $1}')
  # The re-delivery act restarts this instance.
  LAUNCH_ID=$id_good INSTANCE=$good INSTANCE_HOST_ID=$hid_good
  echo "  the instance received (mode, bytes):"
  stat -c '    %A %s %n' "$WORK/compute-1/instances/$good/launch-secret" "$WORK/compute-1/instances/$good/launch-receipt.json"
  echo "  the launch's signed receipt, verified with the pinned verdict key:"
  (cd "$WORK" && tp "${member[@]}" launch verify "$id_good" --public-key verdict-key.pem --server "$good" --host-id "$hid_good")
  echo "  inside the instance, the tenant's challenge is answered with the secret; the tenant checks the proof:"
  show_cmd trustpool launch prove --challenge nonce-42 '   # in the instance'
  proof=$("$TRUSTPOOL" launch prove --secret-file "$WORK/compute-1/instances/$good/launch-secret" --challenge nonce-42)
  echo "  $proof"
  (cd "$WORK" && tp launch check --secret-file volume.key --challenge nonce-42 --proof "$proof")

  echo "  2. the same for the instance on compute-2 (PCR 4 extended behind the event log's back): refused"
  rc=0
  (cd "$WORK" && tp "${member[@]}" launch create --profile build-a --secret-file volume.key --launch-key-fingerprint "$fp" \
    --server "$bad" --host-id "$hid_bad" --wait -c id -c state -c reasons) || rc=$?
  echo "  (exit status $rc: refused)"
  ((rc == 1)) || die "the launch to the tampered host exited $rc, expected 1"
  [[ ! -e $WORK/compute-2/instances/$bad/launch-secret ]] || die "the tampered host received the secret"
  id_bad=$("$TRUSTPOOL" "${member[@]}" launch list -f value -c ID -c "Instance ID" | awk -v i="$bad" '$2 == i {print $1}')
  echo "  nothing reached the instance; the signed receipt of the refusal:"
  (cd "$WORK" && tp "${member[@]}" launch verify "$id_bad" --public-key verdict-key.pem --state refused \
    -c signature -c state -c reasons -c instance_id -c verdict_seq -c issued_at)
  tp "${member[@]}" launch list
}

# rollout: the next build (kernel 6.1.0-17) from a build pipeline's event
# log becomes version 2 of build-a: candidate, canary on one host, approved.
rollout() {
  local dir=$WORK/pipeline port pid rc=0 out
  step "the operator's rollout: the next build becomes version 2 of profile build-a"
  echo "  the build pipeline boots build-b (kernel 6.1.0-17) on a reference machine and keeps its event log:"
  mkdir -p "$dir/tpm"
  port=$(free_port)
  swtpm socket --tpm2 --tpmstate "dir=$dir/tpm" --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
    --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" --flags not-need-init,startup-clear &
  pid=$!
  PIDS+=("$pid")
  "$WORK/bin/tpm-boot-seed" -swtpm "127.0.0.1:$port" -variant build-b -log "$dir/build-b.log" > "$dir/seed.log" 2>&1 || {
    cat "$dir/seed.log" >&2
    die "tpm-boot-seed failed for the pipeline's build-b"
  }
  kill -TERM "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  echo "  $dir/build-b.log"
  echo "  reference values computed offline from that log, no host involved:"
  (cd "$dir" && tp profile version import build-a --eventlog build-b.log -c version -c state -c source)
  echo "  what changed, in boot terms:"
  out=$(tp profile version diff build-a 1 2)
  echo "$out"
  grep -q 'kernel vmlinuz-6.1.0-13-amd64 → vmlinuz-6.1.0-17-amd64' <<< "$out" || die "the diff does not name the kernels"
  echo "  a canary: version 2 is accepted on compute-1 only (which still boots build-a, version 1)"
  tp profile version set-state build-a 2 canary --host compute-1 -c version -c state -c hosts
  tp profile version set-state build-a 2 approved -c version -c state
  echo "  retiring version 1 would turn compute-1 untrusted: refused unless --force"
  tp profile version set-state build-a 1 retired || rc=$?
  echo "  (exit status $rc: refused)"
  ((rc == 1)) || die "retiring the version compute-1 matched exited $rc, expected 1"
  tp profile version list build-a
  tp host show compute-1 -c status -c profile_versions
}

# redeliver: the instance on compute-1 restarts without its secret; the
# tenant asks for it again, and the service attests compute-1 first.
redeliver() {
  local member=(--os-cloud trustpool-demo-member) secret=$WORK/compute-1/instances/$INSTANCE/launch-secret last
  step "re-delivery: the instance on compute-1 restarts"
  rm "$secret"
  echo "  the instance restarted: its launch-secret is gone"
  echo "  the tenant asks; the service attests compute-1 afresh, the agent unseals the blob it kept (sealed to signed policies)"
  tp "${member[@]}" launch redeliver "$LAUNCH_ID" -c redelivery -c state
  cmp -s "$secret" "$WORK/volume.key" || die "the re-delivered secret is missing or differs"
  echo "  the secret is back:"
  stat -c '    %A %s %n' "$secret"
  tp "${member[@]}" launch show "$LAUNCH_ID" -c state -c history
  last=$("$TRUSTPOOL" "${member[@]}" launch show "$LAUNCH_ID" -f value -c history | tail -n 1)
  [[ $last == *" redelivered (asked by user)" ]] || die "the launch's history ends with \"$last\", expected redelivered (asked by user)"
  (cd "$WORK" && tp "${member[@]}" launch verify "$LAUNCH_ID" --public-key verdict-key.pem --state redelivered \
    --server "$INSTANCE" --host-id "$INSTANCE_HOST_ID" -c signature -c state -c profile)
}

# redelivery_history_is HISTORY_SUFFIX: the launch's history ends with it
# and the secret in the instance is the tenant's.
redelivery_history_is() {
  [[ $("$TRUSTPOOL" --os-cloud trustpool-demo-member launch show "$LAUNCH_ID" -f value -c history | tail -n 1) == *" $1" ]] &&
    cmp -s "$WORK/compute-1/instances/$INSTANCE/launch-secret" "$WORK/volume.key"
}

# redeliver_by_agent: the instance on compute-1 stops and starts again, and
# nobody asks: its agent, which checks the instances of the blobs it keeps
# every redelivery_check_interval, sees it start and casts
# redelivery_wanted. The service's redelivery_wanted_interval (default 1m
# per launch) limits only agents' asks, not the user's re-delivery just
# before, and this is the agent's first ask: the default stays.
redeliver_by_agent() {
  local member=(--os-cloud trustpool-demo-member) inst=$WORK/compute-1/instances/$INSTANCE t0
  step "re-delivery asked for by the agent: the instance on compute-1 stops and starts again"
  rm -r "$inst"
  echo "  the instance stopped (its directory is gone); compute-1's agent checks every second"
  sleep 5 # five of the agent's 1 s checks, so that one sees the instance gone even on a busy machine
  mkdir -m 700 "$inst"
  t0=$(date +%s%N)
  echo "  the instance started again, without its secret; nobody runs trustpool launch redeliver"
  wait_for 30 "the agent's re-delivery (launch history ending \"redelivered (asked by agent)\" and the secret in the instance; logs in $WORK; rerun with KEEP_DEMO_DIR=1)" \
    redelivery_history_is "redelivered (asked by agent)"
  printf '  the secret is back %s s after the start; compute-1'\''s agent logged:\n' "$(elapsed "$t0")"
  grep -h 'instance of a kept launch blob started' "$WORK/compute-1/agent.log" | sed 's/^/    /' | cut -c1-160
  stat -c '    %A %s %n' "$inst/launch-secret"
  echo "  the service counted the agent's ask (redelivery_wanted) as accepted:"
  show_cmd curl -s "$API/metrics" '|' grep redelivery_wanted_total
  curl -s "$API/metrics" | grep '^trustpool_launch_redelivery_wanted_total' | sed 's/^/  /'
  tp "${member[@]}" launch show "$LAUNCH_ID" -c state -c history
  (cd "$WORK" && tp "${member[@]}" launch verify "$LAUNCH_ID" --public-key verdict-key.pem --state redelivered \
    --server "$INSTANCE" --host-id "$INSTANCE_HOST_ID" -c signature -c state -c profile)
}

elapsed() { # elapsed T0_NS: seconds since T0 with one decimal
  local ns=$(($(date +%s%N) - $1))
  printf '%d.%d' $((ns / 1000000000)) $((ns % 1000000000 / 100000000))
}

full_demo() {
  step "building trustpool-agent, trustpool-attestation, tests/cmd/tpm-boot-seed and the trustpool CLI (bin/trustpool)"
  mkdir -p "$WORK/bin" bin
  go build -o "$WORK/bin/trustpool-agent" ./compute-agent
  go build -o "$WORK/bin/trustpool-attestation" "$SERVICE_PKG"
  go build -o "$WORK/bin/tpm-boot-seed" ./tests/cmd/tpm-boot-seed
  go build -o bin/trustpool ./cli
  TRUSTPOOL=$PWD/bin/trustpool

  start_rabbitmq
  start_keystone
  write_clouds
  setup_vendor_ca

  step "manufacturing three swtpms (EK certificates from one demo vendor CA) and booting them"
  for h in "${HOSTS[@]}"; do prepare_host "$h"; done

  start_service
  register_catalog

  step "the CLI reads $CLOUDS (OS_CLOUD=trustpool-demo) and finds the service in the catalog"
  tp key list

  step "starting the three agents"
  for h in "${HOSTS[@]}"; do
    start_agent "$h"
    printf '  %-10s trustpool-agent pid %s (log %s)\n' "$h" "${AGENT_PID[$h]}" "$WORK/$h/agent.log"
  done

  step "waiting for the three agents to enroll (register_host -> TPM2_ActivateCredential -> activate_credential)"
  for h in "${HOSTS[@]}"; do
    wait_for 60 "$h to enroll" bash -c "[[ \$('$TRUSTPOOL' host show $h -f value -c enrollment 2>/dev/null) == enrolled ]]"
  done
  echo "  enrolled and attested, but no profile exists yet: nothing to appraise against, so not trusted"
  table

  step "learning profile \"build-a\" from compute-1 (its verified boot: firmware, Secure Boot, shim, GRUB, kernel, initrd, command line)"
  echo "  the command waits until compute-1 has been appraised with the new profile; the PCRs the boot"
  echo "  facts are read from are pinned too (fact_pcrs)"
  tp profile learn build-a --host compute-1 -c name -c facts -c fact_pcrs -c host_status -c host_profiles

  step "waiting for all three hosts to be trusted under build-a"
  for h in "${HOSTS[@]}"; do wait_status 60 "$h" trusted; done
  table

  step "compute-2: extending PCR 4 behind the event log's back (tpm2_pcrextend via swtpm TCTI)"
  echo "  the agent sees the PCR move and casts measurements_changed; the service re-attests at once"
  local t0
  t0=$(date +%s%N)
  TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=${TPM_PORT[compute-2]}" \
    tpm2_pcrextend "4:sha256=$(printf 'evil bootloader' | sha256sum | cut -d' ' -f1)"
  wait_status 30 compute-2 untrusted
  printf '  compute-2 untrusted %s s after the extend (attestation interval 5 s); its agent logged:\n' "$(elapsed "$t0")"
  grep -h 'measurements changed' "$WORK/compute-2/agent.log" | sed 's/^/    /' | cut -c1-160
  tp host show compute-2 -c status -c reasons -c seq -c verified_at
  tp host history compute-2

  step "compute-3: stopping its agent (SIGTERM); the next quote misses its deadline"
  t0=$(date +%s%N)
  stop_agent compute-3
  wait_status 60 compute-3 unknown
  printf '  compute-3 unknown (unreachable) %s s after its agent stopped\n' "$(elapsed "$t0")"
  tp host list --status unknown
  echo "  attesting compute-1 now (fresh nonce and quote; the command waits for that round's verdict):"
  tp host attest compute-1 -c name -c status -c seq -c verified_at

  step "a project member: no operator data (exit status 3), but the public key and offline checks"
  show_cmd trustpool --os-cloud trustpool-demo-member host list
  local rc=0
  "$TRUSTPOOL" --os-cloud trustpool-demo-member host list || rc=$?
  echo "  (exit status $rc)"
  ((rc == 3)) || die "the member's host list exited $rc, expected 3"
  echo "  the operator hands out compute-2's signed verdict (as shims receive it); the member checks it:"
  show_cmd trustpool host show compute-2 --long -f json -c signed_verdict '>' compute-2-verdict.json
  "$TRUSTPOOL" host show compute-2 --long -f json -c signed_verdict > "$WORK/compute-2-verdict.json"
  show_cmd trustpool --os-cloud trustpool-demo-member key list --use verdict --long -f value -c '"Public Key"' '>' verdict-key.pem
  "$TRUSTPOOL" --os-cloud trustpool-demo-member key list --use verdict --long -f value -c "Public Key" > "$WORK/verdict-key.pem"
  (cd "$WORK" && tp verdict verify compute-2-verdict.json --public-key verdict-key.pem)

  tenant_act
  rollout
  redeliver
  redeliver_by_agent

  step "the audit log of administrative changes"
  tp audit list --limit 5

  step "done: compute-1 trusted, compute-2 untrusted (PCR 4 replay mismatch), compute-3 unreachable; a launch delivered to compute-1 (and re-delivered, asked by the tenant, then by the agent), one to compute-2 refused; build-a version 2 approved"
  echo "  the CLI's clouds.yaml ($CLOUDS):"
  sed 's/^/    /' "$CLOUDS"
  if [[ ${DEMO_WAIT:-} == 1 || (-z ${DEMO_WAIT:-} && -t 0 && -t 1) ]]; then
    cat <<EOF

  Everything keeps running until you press Enter. In another shell, try:
    export OS_CLIENT_CONFIG_FILE=$CLOUDS
    bin/trustpool --os-cloud trustpool-demo host list
    bin/trustpool --os-cloud trustpool-demo host show compute-2 --long
    bin/trustpool --os-cloud trustpool-demo host attest compute-1
    bin/trustpool --help
EOF
    read -r _ || true
  fi
  echo "  stopping everything"
}

SERVICE_PKG=
for p in ./attestation-service/cmd/trustpool-attestation ./attestation-service; do
  if compgen -G "$p/*.go" > /dev/null && grep -qs '^package main' "$p"/*.go; then
    SERVICE_PKG=$p
    break
  fi
done

case ${1:-} in
echo) echo_demo ;;
"")
  if [[ -n $SERVICE_PKG ]]; then
    full_demo
  else
    echo "demo: the attestation service is not built yet; running the messaging echo demo" >&2
    echo_demo
  fi
  ;;
*)
  echo "usage: $0 [echo]" >&2
  exit 2
  ;;
esac
