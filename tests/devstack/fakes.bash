# Our own stand-ins for the DevStack functions the Trustpool plugin calls
# (none of DevStack's code is copied). They keep DevStack's documented
# signatures and semantics where the plugin depends on them, and record
# every call, one line per call, in $CALLS:
#
#   run_process trustpool-agent /opt/stack/trustpool/bin/trustpool-agent ...
#
# Everything lives under $FAKE_ROOT: configuration, data, systemd and Apache
# directories, nova.conf, /usr/local/bin. Commands the plugin runs
# (swtpm_setup, modprobe, openstack, ...) are recorders in $FAKE_ROOT/fakebin,
# put first on PATH; a test replaces one by writing its own script there.
# curl has one too, so that a test can tell the plugin never calls it.
#
# Usage (bats): FAKE_ROOT=$BATS_TEST_TMPDIR; source fakes.bash; then set
# ENABLED_SERVICES and source devstack/settings and devstack/plugin.sh.
# shellcheck shell=bash
# shellcheck disable=SC2034 # DevStack globals the plugin reads

: "${FAKE_ROOT:?set FAKE_ROOT}"
CALLS=$FAKE_ROOT/calls
: > "$CALLS"

record() { printf '%s\n' "$*" >> "$CALLS"; }

# --- DevStack's globals (stackrc, lib/*) ------------------------------------
DEST=$FAKE_ROOT/opt/stack
DATA_DIR=$DEST/data
STACK_USER=$(id -un)
SERVICE_HOST=192.0.2.10
SERVICE_PROTOCOL=http
SERVICE_TIMEOUT=3
REGION_NAME=${REGION_NAME:-RegionOne}
SERVICE_PASSWORD=${SERVICE_PASSWORD:-secretservice}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-secretadmin}
SERVICE_DOMAIN_NAME=Default
SERVICE_PROJECT_NAME=service
KEYSTONE_SERVICE_URI=${KEYSTONE_SERVICE_URI:-http://192.0.2.10/identity}
NOVA_CONF=$FAKE_ROOT/etc/nova/nova.conf
NOVA_CPU_CONF=$FAKE_ROOT/etc/nova/nova-cpu.conf
SYSTEMD_DIR=$FAKE_ROOT/etc/systemd/system
SYSTEMCTL="record systemctl"
ENABLE_DEBUG_LOG_LEVEL=True
declare -gA GITDIR=([trustpool]="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)")
ENABLED_SERVICES=${ENABLED_SERVICES:-}
DISABLED_SERVICES=${DISABLED_SERVICES:-}
# The configuration and runtime paths the plugin writes, moved under the root.
TRUSTPOOL_CONF_DIR=$FAKE_ROOT/etc/trustpool
TRUSTPOOL_SHIM_SOCKET=$FAKE_ROOT/run/trustpool/filter-shim.sock
TRUSTPOOL_SHIM_SNAPSHOT=$FAKE_ROOT/run/trustpool/verdicts.snapshot
TRUSTPOOL_DEV_DIR=$FAKE_ROOT/dev
TRUSTPOOL_SYS_DIR=$FAKE_ROOT/sys
TRUSTPOOL_SWTPM_LOCALCA=${TRUSTPOOL_SWTPM_LOCALCA:-$FAKE_ROOT/var/lib/swtpm-localca}
TRUSTPOOL_CLI_LINK=$FAKE_ROOT/usr/local/bin/trustpool
mkdir -p "$DEST" "$DATA_DIR" "$SYSTEMD_DIR" "$FAKE_ROOT/etc/nova" "$FAKE_ROOT/usr/local/bin" \
    "$FAKE_ROOT/etc/apache2/sites-available" "$FAKE_ROOT/fakebin" \
    "$FAKE_ROOT/var/lib/swtpm-localca" "$FAKE_ROOT/dev" "$FAKE_ROOT/sys/class/tpm"
echo "root CA" > "$FAKE_ROOT/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem"
echo "issuer CA" > "$FAKE_ROOT/var/lib/swtpm-localca/issuercert.pem"

# --- functions-common: services, plugin, messages ---------------------------
define_plugin() { record define_plugin "$@"; }
plugin_requires() { record plugin_requires "$@"; }
echo_summary() { :; }
warn() { record warn "$@"; }
die() {
    shift
    echo "die: $*" >&2
    record die "$@"
    exit 1
}

# is_service_enabled S...: any of them enabled (an OR, like DevStack's).
is_service_enabled() {
    local s
    for s in "$@"; do
        if [[ ,$ENABLED_SERVICES, == *,"$s",* && ,$DISABLED_SERVICES, != *,"$s",* ]]; then
            return 0
        fi
    done
    return 1
}
enable_service() {
    local s
    for s in "$@"; do
        if [[ ,$DISABLED_SERVICES, == *,"$s",* ]]; then
            record warn "not enabling $s: disabled"
        elif ! is_service_enabled "$s"; then
            ENABLED_SERVICES+=,$s
        fi
    done
}
disable_service() {
    local s
    for s in "$@"; do DISABLED_SERVICES+=,$s; done
}

# trueorfalse DEFAULT VARNAME: the variable's value as True or False.
trueorfalse() {
    local default=$1 v=${!2:-}
    case ${v,,} in
        "") echo "$default" ;;
        1 | yes | true | on) echo True ;;
        0 | no | false | off) echo False ;;
        *) echo "$default" ;;
    esac
}
# trueorfalse also accepts a value in DevStack when the name is not a
# variable; the plugin only passes names.

# --- run_process / stop_process: a unit shaped like DevStack's --------------
run_process() {
    local svc=$1 cmd=$2 group=${3:-} user=${4:-$STACK_USER}
    record run_process "$@"
    is_service_enabled "$svc" || return 0
    [[ $cmd == /* && $cmd != *sudo* ]] || die $LINENO "run_process: bad command $cmd"
    {
        echo "[Unit]"
        echo "Description=Devstack devstack@$svc.service"
        echo
        echo "[Service]"
        echo "ExecReload=/bin/kill -HUP \$MAINPID"
        echo "TimeoutStopSec=300"
        echo "KillMode=process"
        echo "ExecStart=$cmd"
        echo "User=$user"
        [[ -z $group ]] || echo "Group=$group"
        echo "Environment=\"PATH=$PATH\""
        echo
        echo "[Install]"
        echo "WantedBy=multi-user.target"
    } > "$SYSTEMD_DIR/devstack@$svc.service"
    $SYSTEMCTL enable "devstack@$svc.service"
    $SYSTEMCTL start "devstack@$svc.service"
    # What starting the service does to the machine, if a test says.
    if [[ -n ${FAKE_ON_START[$svc]:-} ]]; then
        eval "${FAKE_ON_START[$svc]}"
    fi
}
declare -gA FAKE_ON_START=()
stop_process() {
    record stop_process "$@"
    if [[ -n ${FAKE_ON_STOP[$1]:-} ]]; then
        eval "${FAKE_ON_STOP[$1]}"
    fi
}
declare -gA FAKE_ON_STOP=()
wait_for_service() { record wait_for_service "$@"; }

# --- installing ---------------------------------------------------------------
install_package() { record install_package "$@"; }
setup_develop() { record setup_develop "$@"; }

# --- Keystone (recorders; keystone-fakes.bash has real ones) ------------------
create_service_user() { record create_service_user "$@"; }
get_or_create_service() {
    record get_or_create_service "$@"
    echo "service-id-$1"
}
get_or_create_endpoint() { record get_or_create_endpoint "$@"; }

# --- databases, messaging, Apache ---------------------------------------------
recreate_database() { record recreate_database "$@"; }
database_connection_url() {
    echo "mysql+pymysql://root:${DATABASE_PASSWORD:-dbpw}@127.0.0.1/$1?charset=utf8&plugin=dbcounter"
}
get_transport_url() {
    echo "${FAKE_TRANSPORT_URL:-rabbit://stackrabbit:secretrabbit@192.0.2.10:5672/}"
}
write_local_proxy_http_config() {
    record write_local_proxy_http_config "$@"
    echo "ProxyPass \"$3\" \"$2\"" > "$(apache_site_config_for "$1")"
}
apache_site_config_for() { echo "$FAKE_ROOT/etc/apache2/sites-available/$1.conf"; }
disable_apache_site() { record disable_apache_site "$@"; }
restart_apache_server() { record restart_apache_server; }

# --- INI files (inc/ini-config): real files, our own awk ----------------------
# iniget FILE SECTION OPTION: the first value, "" if absent.
iniget() {
    [[ -f $1 ]] || return 0
    awk -v s="$2" -v o="$3" '
        /^\[.*\]$/ { in_s = ($0 == "[" s "]"); next }
        in_s && $0 ~ "^" o "[ \t]*=" { sub("^[^=]*=[ \t]*", ""); print; exit }' "$1"
}
# iniget_multiline FILE SECTION OPTION: every value, one per line.
iniget_multiline() {
    [[ -f $1 ]] || return 0
    awk -v s="$2" -v o="$3" '
        /^\[.*\]$/ { in_s = ($0 == "[" s "]"); next }
        in_s && $0 ~ "^" o "[ \t]*=" { sub("^[^=]*=[ \t]*", ""); print }' "$1"
}
# iniset FILE SECTION OPTION VALUE: replace every line of OPTION in SECTION
# by one (created where missing).
iniset() {
    local f=$1 s=$2 o=$3 v=$4
    record iniset "$@"
    mkdir -p "$(dirname "$f")"
    touch "$f"
    awk -v s="$s" -v o="$o" -v v="$v" '
        /^\[.*\]$/ { if (in_s && !done) { print o " = " v; done = 1 } in_s = ($0 == "[" s "]"); seen = seen || in_s; print; next }
        in_s && $0 ~ "^" o "[ \t]*=" { if (!done) { print o " = " v; done = 1 } next }
        { print }
        END { if (!seen) print "[" s "]"; if (!done) print o " = " v }' "$f" > "$f.new"
    mv "$f.new" "$f"
}
# iniadd FILE SECTION OPTION VALUE...: append values of a multi-valued
# option (no deduplication, like DevStack's).
iniadd() {
    local f=$1 s=$2 o=$3 v all
    shift 3
    record iniadd "$f" "$s" "$o" "$@"
    all=$(iniget_multiline "$f" "$s" "$o")
    for v in "$@"; do all+=${all:+$'\n'}$v; done
    iniset "$f" "$s" "$o" "__MULTI__"
    awk -v o="$o" -v vals="$all" '
        $0 == o " = __MULTI__" { n = split(vals, a, "\n"); for (i = 1; i <= n; i++) print o " = " a[i]; next }
        { print }' "$f" > "$f.new"
    mv "$f.new" "$f"
}

# sudo runs the command as the caller (tests never need root for the
# plugin's file operations: everything is under FAKE_ROOT).
sudo() { "$@"; }

# --- commands: recorders on PATH ----------------------------------------------
for _cmd in swtpm swtpm_setup modprobe curl openstack; do
    cat > "$FAKE_ROOT/fakebin/$_cmd" <<EOF
#!/bin/bash
echo "$_cmd \$*" >> "$CALLS"
EOF
    chmod +x "$FAKE_ROOT/fakebin/$_cmd"
done
unset _cmd
PATH=$FAKE_ROOT/fakebin:$PATH

# called COMMAND-PREFIX: was a call recorded that starts with it?
called() { grep -qF -- "$*" "$CALLS"; }
# calls_of WORD: the recorded calls starting with WORD.
calls_of() { grep -E "^$1( |$)" "$CALLS" || true; }
