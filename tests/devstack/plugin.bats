#!/usr/bin/env bats
# shellcheck disable=SC2034 # variables set here are read by the sourced plugin
# shellcheck disable=SC2016 # stand-in scripts are written in single quotes
# shellcheck disable=SC2030,SC2031 # each test runs in its own subshell: settings do not leak, by design
# The Trustpool DevStack plugin against our own fakes of DevStack's functions
# (fakes.bash): settings, every phase, per combination of enabled services,
# re-runs, unstack and clean. The configurations it writes are also loaded by
# the real binaries, its units checked by systemd-analyze and its Keystone
# registration run against a real Keystone: tests/devstack/devstack_test.go.

setup() {
    load helper
    fake_devstack
}

ALL=trustpool-attestation,trustpool-filter-shim,trustpool-agent,n-api,n-sch,n-cpu

# ------------------------------------------------------------------ settings

@test "settings: defaults, and the source tree from GITDIR" {
    unset TRUSTPOOL_BIN_DIR
    load_plugin trustpool-agent
    [ "$TRUSTPOOL_DIR" = "$REPO" ]
    [ "$TRUSTPOOL_PREBUILT" = False ]
    [ "$TRUSTPOOL_BIN_DIR" = "$REPO/bin" ]
    [ "$TRUSTPOOL_API_URL" = "http://192.0.2.10/attestation" ]
    [ "$TRUSTPOOL_DATA_DIR" = "$DATA_DIR/trustpool" ]
    [ "$TRUSTPOOL_REQUIRE_EK_CERT" = True ]
    grep -qx 'define_plugin trustpool' "$CALLS"
}

@test "settings: TRUSTPOOL_BIN_DIR means prebuilt binaries" {
    load_plugin trustpool-agent
    [ "$TRUSTPOOL_PREBUILT" = True ]
    [ "$TRUSTPOOL_BIN_DIR" = "$FAKE_BIN" ]
}

@test "settings: every default can be overridden from local.conf" {
    TRUSTPOOL_API_PORT=1234 TRUSTPOOL_FLAVOR="" TRUSTPOOL_PROFILE=gold \
        TRUSTPOOL_REQUIRE_EK_CERT=false TRUSTPOOL_DATA_DIR=/srv/tp
    load_plugin trustpool-agent
    [ "$TRUSTPOOL_API_PORT" = 1234 ]
    [ -z "$TRUSTPOOL_FLAVOR" ]
    [ "$TRUSTPOOL_PROFILE" = gold ]
    [ "$TRUSTPOOL_REQUIRE_EK_CERT" = False ]
    [ "$TRUSTPOOL_SIGNING_KEY" = /srv/tp/verdict-signing.key ]
}

@test "settings: tls-proxy makes the endpoint https" {
    load_plugin trustpool-attestation,tls-proxy
    [ "$TRUSTPOOL_API_URL" = "https://192.0.2.10/attestation" ]
}

@test "settings: a TPM-less agent node gets trustpool-swtpm (a leftover vtpm does not count)" {
    unset TRUSTPOOL_USE_SWTPM
    tpm_chip 1 virtual
    load_plugin trustpool-agent
    [ "$TRUSTPOOL_USE_SWTPM" = True ]
    is_service_enabled trustpool-swtpm
}

@test "settings: a node with a hardware TPM uses it, no swtpm" {
    unset TRUSTPOOL_USE_SWTPM
    tpm_chip 0 platform
    load_plugin trustpool-agent
    [ "$TRUSTPOOL_USE_SWTPM" = False ]
    refute is_service_enabled trustpool-swtpm
}

@test "settings: a swtpm gets a simulated measured boot unless TRUSTPOOL_SWTPM_SIMULATED_BOOT=False" {
    load_plugin trustpool-agent
    [ "$TRUSTPOOL_SWTPM_SIMULATED_BOOT" = True ]
    [ "$TRUSTPOOL_SWTPM_EVENT_LOG" = "$DATA_DIR/trustpool/swtpm/binary_bios_measurements" ]
    TRUSTPOOL_SWTPM_SIMULATED_BOOT=false
    load_plugin trustpool-agent
    [ "$TRUSTPOOL_SWTPM_SIMULATED_BOOT" = False ]
}

@test "settings: no swtpm without the agent, or when disabled" {
    TRUSTPOOL_USE_SWTPM=True
    load_plugin trustpool-attestation
    refute is_service_enabled trustpool-swtpm
    DISABLED_SERVICES=trustpool-swtpm
    load_plugin trustpool-agent
    refute is_service_enabled trustpool-swtpm
}

# ------------------------------------------------------------------ nothing enabled

@test "no Trustpool service enabled: no phase does anything" {
    load_plugin n-api,n-sch,n-cpu,key
    : > "$CALLS"
    before=$(tree)
    stack_all
    phase unstack
    phase clean
    [ ! -s "$CALLS" ]
    [ "$(tree)" = "$before" ]
}

# ------------------------------------------------------------------ pre-install

@test "pre-install: swtpm behind the vtpm proxy, manufactured once" {
    TRUSTPOOL_USE_SWTPM=True
    load_plugin trustpool-agent
    swtpm_appears
    printf '#!/bin/bash\necho "swtpm_setup $*" >> "%s"\nmkdir -p "$3"; touch "$3/tpm2-00.permall"\n' \
        "$CALLS" > "$FAKE_ROOT/fakebin/swtpm_setup"
    phase stack pre-install
    grep -qx 'install_package swtpm swtpm-tools tpm-udev' "$CALLS"
    [ "$(calls_of swtpm_setup | wc -l)" = 1 ]
    called swtpm_setup --tpm2 --tpmstate "$TRUSTPOOL_SWTPM_DIR/state" --create-ek-cert
    called modprobe tpm_vtpm_proxy
    called "run_process trustpool-swtpm $FAKE_ROOT/fakebin/swtpm chardev --vtpm-proxy --tpm2 --tpmstate dir=$TRUSTPOOL_SWTPM_DIR/state  root"
    [ "$(cat "$TRUSTPOOL_SWTPM_DIR/tpm")" = "device $TRUSTPOOL_DEV_DIR/tpmrm1" ]
    # Re-running keeps the manufactured TPM (its EK must not change).
    phase stack pre-install
    [ "$(calls_of swtpm_setup | wc -l)" = 1 ]
}

@test "pre-install: without tpm_vtpm_proxy, swtpm listens on loopback" {
    TRUSTPOOL_USE_SWTPM=True
    load_plugin trustpool-agent
    printf '#!/bin/bash\necho "modprobe $*" >> "%s"\nexit 1\n' "$CALLS" > "$FAKE_ROOT/fakebin/modprobe"
    phase stack pre-install
    called warn
    called "run_process trustpool-swtpm $FAKE_ROOT/fakebin/swtpm socket --tpm2"
    called "--server type=tcp,port=2321,bindaddr=127.0.0.1 --ctrl type=tcp,port=2322,bindaddr=127.0.0.1"
    [ "$(cat "$TRUSTPOOL_SWTPM_DIR/tpm")" = "swtpm 127.0.0.1:2321" ]
}

@test "pre-install: the vtpm device must appear, or stack.sh stops" {
    TRUSTPOOL_USE_SWTPM=True TRUSTPOOL_WAIT_TIMEOUT=1
    load_plugin trustpool-agent
    run phase stack pre-install
    [ "$status" -ne 0 ]
    [[ $output == *"no vtpm proxy TPM appeared"* ]]
}

@test "pre-install: nothing on a node with a TPM or without the agent" {
    load_plugin trustpool-agent,trustpool-attestation
    phase stack pre-install
    refute called swtpm
    refute called install_package
}

# ------------------------------------------------------------------ install

@test "install: prebuilt binaries are checked, not built" {
    load_plugin trustpool-agent
    phase stack install
    refute called "go build"
    rm "$FAKE_BIN/trustpool-agent"
    run phase stack install
    [ "$status" -ne 0 ]
    [[ $output == *"has no trustpool-agent"* ]]
}

@test "install: the prebuilt directory must have the CLI too" {
    load_plugin trustpool-attestation
    rm "$FAKE_BIN/trustpool"
    run phase stack install
    [ "$status" -ne 0 ]
    [[ $output == *"$FAKE_BIN has no trustpool" ]]
}

@test "install: the CLI is linked onto PATH, a stale link replaced, clean removes it" {
    load_plugin trustpool-agent
    ln -s /nonexistent/trustpool "$TRUSTPOOL_CLI_LINK"
    phase stack install
    [ "$(readlink "$TRUSTPOOL_CLI_LINK")" = "$FAKE_BIN/trustpool" ]
    phase stack install
    [ "$(readlink "$TRUSTPOOL_CLI_LINK")" = "$FAKE_BIN/trustpool" ]
    phase clean
    [ ! -e "$TRUSTPOOL_CLI_LINK" ] && [ ! -L "$TRUSTPOOL_CLI_LINK" ]
}

@test "install: someone else's trustpool on PATH is left alone, also by clean" {
    load_plugin trustpool-agent
    echo "not ours" > "$TRUSTPOOL_CLI_LINK"
    phase stack install
    called warn
    [ "$(cat "$TRUSTPOOL_CLI_LINK")" = "not ours" ]
    phase clean
    [ "$(cat "$TRUSTPOOL_CLI_LINK")" = "not ours" ]
}

@test "install: no link when TRUSTPOOL_CLI_LINK is empty or is the binary itself" {
    TRUSTPOOL_CLI_LINK=""
    load_plugin trustpool-agent
    phase stack install
    [ -z "$(ls "$FAKE_ROOT/usr/local/bin")" ]
    TRUSTPOOL_CLI_LINK=$FAKE_BIN/trustpool
    phase stack install
    [ -f "$FAKE_BIN/trustpool" ] && [ ! -L "$FAKE_BIN/trustpool" ]
    [ -z "$(ls "$FAKE_ROOT/usr/local/bin")" ]
}

@test "install: builds the three daemons and the CLI with the Go at TRUSTPOOL_GO" {
    unset TRUSTPOOL_BIN_DIR
    TRUSTPOOL_GO=$FAKE_ROOT/fakebin/go
    printf '#!/bin/bash\nif [[ $1 == env ]]; then echo go1.22.5; exit; fi\necho "go $* GOCACHE=$GOCACHE" >> "%s"\n' \
        "$CALLS" > "$TRUSTPOOL_GO"
    chmod +x "$TRUSTPOOL_GO"
    load_plugin trustpool-agent
    phase stack install
    called "go build -trimpath -o $REPO/bin/trustpool-agent ./compute-agent GOCACHE=$DEST/.trustpool-go/cache"
    called "go build -trimpath -o $REPO/bin/trustpool-attestation ./attestation-service"
    called "go build -trimpath -o $REPO/bin/trustpool-filter-shim ./nova-filter-shim"
    called "go build -trimpath -o $REPO/bin/trustpool ./cli"
    [ "$(readlink "$TRUSTPOOL_CLI_LINK")" = "$REPO/bin/trustpool" ]
}

@test "install: a missing or too old Go stops stack.sh with the reason" {
    unset TRUSTPOOL_BIN_DIR
    TRUSTPOOL_GO=$FAKE_ROOT/nonexistent/go
    load_plugin trustpool-agent
    run phase stack install
    [ "$status" -ne 0 ]
    [[ $output == *"no Go toolchain at TRUSTPOOL_GO"* ]]

    TRUSTPOOL_GO=$FAKE_ROOT/fakebin/go
    printf '#!/bin/bash\necho go1.19.8\n' > "$TRUSTPOOL_GO"
    chmod +x "$TRUSTPOOL_GO"
    run phase stack install
    [ "$status" -ne 0 ]
    [[ $output == *"older than 1.21"* ]]
}

@test "install, swtpm on a socket: a simulated measured boot, its event log where the agent reads it, labelled as such" {
    TRUSTPOOL_USE_SWTPM=True
    load_plugin trustpool-agent
    echo "swtpm 127.0.0.1:2321" | _trustpool_install_file "$TRUSTPOOL_SWTPM_DIR/tpm" 0644
    run phase stack install
    [ "$status" -eq 0 ]
    grep -qx "tpm-boot-seed -variant build-a -log $TRUSTPOOL_SWTPM_EVENT_LOG -wait 3s -swtpm 127.0.0.1:2321" "$CALLS"
    [ "$(cat "$TRUSTPOOL_SWTPM_EVENT_LOG")" = "simulated event log" ]
    [ "$(stat -c %U "$TRUSTPOOL_SWTPM_EVENT_LOG")" = "$(id -un)" ]
    [[ $(calls_of warn) == *"SIMULATED measured boot (development clouds only, never production)"* ]]
    # The agent reads that log, and not the machine's IMA list.
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_AGENT_CONF" tpm.swtpm tpm.event_log)" = "127.0.0.1:2321
$TRUSTPOOL_SWTPM_EVENT_LOG" ]
    run toml "$TRUSTPOOL_AGENT_CONF" tpm.ima_log
    [ "$status" -eq 0 ] && [ -z "$output" ]
}

@test "install, swtpm behind the vtpm proxy: the simulated boot goes to its device, checked against sysfs" {
    TRUSTPOOL_USE_SWTPM=True
    load_plugin trustpool-agent
    tpm_chip 1 virtual
    echo "device $TRUSTPOOL_DEV_DIR/tpmrm1" | _trustpool_install_file "$TRUSTPOOL_SWTPM_DIR/tpm" 0644
    phase stack install
    grep -qx "tpm-boot-seed -variant build-a -log $TRUSTPOOL_SWTPM_EVENT_LOG -wait 3s -device $TRUSTPOOL_DEV_DIR/tpmrm1 -sysfs $TRUSTPOOL_SYS_DIR" "$CALLS"
    [ -s "$TRUSTPOOL_SWTPM_EVENT_LOG" ]
}

@test "install: a failing simulated boot stops stack.sh" {
    TRUSTPOOL_USE_SWTPM=True
    load_plugin trustpool-agent
    echo "swtpm 127.0.0.1:2321" | _trustpool_install_file "$TRUSTPOOL_SWTPM_DIR/tpm" 0644
    printf '#!/bin/bash\necho "tpm-boot-seed: 127.0.0.1:2321 has booted already" >&2\nexit 1\n' > "$FAKE_BIN/tpm-boot-seed"
    run phase stack install
    [ "$status" -ne 0 ]
    [[ $output == *"has booted already"* ]]
    [[ $output == *"the simulated measured boot of the swtpm (127.0.0.1:2321) failed"* ]]
}

@test "install: a prebuilt directory needs tpm-boot-seed only where a swtpm gets a simulated boot" {
    TRUSTPOOL_USE_SWTPM=True
    load_plugin trustpool-agent
    echo "swtpm 127.0.0.1:2321" | _trustpool_install_file "$TRUSTPOOL_SWTPM_DIR/tpm" 0644
    rm "$FAKE_BIN/tpm-boot-seed"
    run phase stack install
    [ "$status" -ne 0 ]
    [[ $output == *"$FAKE_BIN has no tpm-boot-seed, which gives this node's swtpm its simulated measured boot"* ]]
    [[ $output == *"TRUSTPOOL_SWTPM_SIMULATED_BOOT=False"* ]]
    # Without the simulated boot, or on a node with a TPM, it is not needed.
    : > "$CALLS"
    TRUSTPOOL_SWTPM_SIMULATED_BOOT=False
    load_plugin trustpool-agent
    phase stack install
    TRUSTPOOL_SWTPM_SIMULATED_BOOT=True TRUSTPOOL_USE_SWTPM=False
    load_plugin trustpool-agent,trustpool-attestation
    phase stack install
    refute called tpm-boot-seed
}

@test "install: the build adds tpm-boot-seed where a swtpm boots, and only there" {
    unset TRUSTPOOL_BIN_DIR
    TRUSTPOOL_USE_SWTPM=True
    TRUSTPOOL_GO=$FAKE_ROOT/fakebin/go
    # The stand-in Go "builds" the seeding tool the way the plugin runs it.
    printf '#!/bin/bash\nif [[ $1 == env ]]; then echo go1.22.5; exit; fi\necho "go $*" >> "%s"\n[[ $4 != */tpm-boot-seed ]] || cp "%s" "$4"\n' \
        "$CALLS" "$FAKE_BIN/tpm-boot-seed" > "$TRUSTPOOL_GO"
    chmod +x "$TRUSTPOOL_GO"
    load_plugin trustpool-agent
    echo "swtpm 127.0.0.1:2321" | _trustpool_install_file "$TRUSTPOOL_SWTPM_DIR/tpm" 0644
    phase stack install
    called "go build -trimpath -o $REPO/bin/tpm-boot-seed ./tests/cmd/tpm-boot-seed"
    called "tpm-boot-seed -variant build-a -log $TRUSTPOOL_SWTPM_EVENT_LOG"
    rm -f "$REPO/bin/tpm-boot-seed"
    : > "$CALLS"
    unset TRUSTPOOL_BIN_DIR
    TRUSTPOOL_USE_SWTPM=False
    load_plugin trustpool-agent
    phase stack install
    called "go build -trimpath -o $REPO/bin/trustpool-agent"
    refute called tpm-boot-seed
}

@test "install: the Nova filter goes into Nova's Python where nova runs" {
    load_plugin trustpool-filter-shim
    phase stack install
    called "setup_develop $REPO/nova-filter-shim/python"
}

@test "install: no Nova filter on a compute-only node" {
    load_plugin trustpool-agent,n-cpu
    phase stack install
    refute called setup_develop
}

# ------------------------------------------------------------------ post-config

@test "post-config, attestation: TOML config, Keystone service and endpoints, Apache proxy" {
    load_plugin trustpool-attestation,key
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" api.listen api.public_endpoint database.connection keystone_authtoken.username keystone_authtoken.project_name)" = \
        "127.0.0.1:9780
http://192.0.2.10/attestation
sqlite:///$DATA_DIR/trustpool/attestation.db
trustpool
service" ]
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" DEFAULT.control_exchange keys.verdict_signing_key enrollment.require_ek_cert \
        keys.launch_key launch.nova_api)" = \
        "trustpool
$DATA_DIR/trustpool/verdict-signing.key
true
$DATA_DIR/trustpool/launch.key
true" ]
    # Placement traits by default: the admin role Zed's Placement asks for.
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" placement.mirror_traits placement.region_name revocation.disable_compute_service)" = \
        "true
RegionOne
false" ]
    grep -qx 'create_service_user trustpool admin' "$CALLS"
    grep -qx 'get_or_create_service trustpool attestation Trustpool TPM 2.0 host attestation' "$CALLS"
    grep -qx "get_or_create_endpoint service-id-trustpool RegionOne http://192.0.2.10/attestation  http://192.0.2.10/attestation" "$CALLS"
    grep -qx "write_local_proxy_http_config trustpool-attestation http://127.0.0.1:9780 /attestation" "$CALLS"
    [ "$(stat -c %a "$TRUSTPOOL_ATTESTATION_CONF")" = 600 ]
    [ ! -e "$TRUSTPOOL_SHIM_CONF" ] && [ ! -e "$TRUSTPOOL_AGENT_CONF" ]
    [ ! -e "$NOVA_CONF" ]
}

@test "post-config, attestation: compute disable on, or no actions (then no admin role)" {
    TRUSTPOOL_DISABLE_COMPUTE=True
    load_plugin trustpool-attestation
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" revocation.disable_compute_service nova.region_name)" = "true
RegionOne" ]
    grep -qx 'create_service_user trustpool admin' "$CALLS"
    : > "$CALLS"
    TRUSTPOOL_DISABLE_COMPUTE=False TRUSTPOOL_PLACEMENT_TRAITS=False
    load_plugin trustpool-attestation
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" placement.mirror_traits revocation.disable_compute_service)" = "false
false" ]
    grep -qx 'create_service_user trustpool' "$CALLS"
}

@test "post-config, attestation: the timing follows TRUSTPOOL_ATTESTATION_INTERVAL" {
    local keys="attestation.interval attestation.jitter attestation.quote_timeout attestation.nonce_lifetime attestation.verdict_validity attestation.heartbeat_interval"
    declare -A want=(
        [2s]="2s 400ms 1s 2s 6s 2s"
        [10s]="10s 2s 5s 10s 30s 10s"
        [60s]="60s 12s 5s 10s 180s 60s"
        [1m30s]="90s 18s 5s 10s 270s 90s"
        [1500ms]="1500ms 300ms 750ms 1500ms 4500ms 1500ms"
    )
    local interval got
    for interval in "${!want[@]}"; do
        TRUSTPOOL_ATTESTATION_INTERVAL=$interval
        load_plugin trustpool-attestation
        phase stack post-config
        # shellcheck disable=SC2086 # one key per word
        got=$(toml "$TRUSTPOOL_ATTESTATION_CONF" $keys | tr '\n' ' ')
        [ "$got" = "${want[$interval]} " ] || { echo "$interval: got $got, want ${want[$interval]}"; return 1; }
    done
}

@test "post-config, attestation: an interval the plugin cannot read, or under 1s, stops stack.sh" {
    local interval
    for interval in 10 1.5s 10S ten -1s 500ms 0s; do
        TRUSTPOOL_ATTESTATION_INTERVAL=$interval
        load_plugin trustpool-attestation
        run phase stack post-config
        [ "$status" -ne 0 ] || { echo "$interval accepted"; return 1; }
        [[ $output == *"TRUSTPOOL_ATTESTATION_INTERVAL=$interval is "* ]] || { echo "$interval: $output"; return 1; }
        [ ! -e "$TRUSTPOOL_ATTESTATION_CONF" ]
    done
}

@test "post-config, attestation with MySQL: the database, without DevStack's query options" {
    load_plugin trustpool-attestation,mysql
    phase stack post-config
    grep -qx 'recreate_database trustpool' "$CALLS"
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" database.connection)" = "mysql+pymysql://root:dbpw@127.0.0.1/trustpool" ]
}

@test "post-config: values with TOML's special characters survive exactly" {
    SERVICE_PASSWORD=$'p"a\\s$s#w=o[r]d\'&'$'\t''é😀'
    FAKE_TRANSPORT_URL='rabbit://stack"rabbit:p\ss@192.0.2.10:5672/'
    load_plugin trustpool-attestation,trustpool-filter-shim
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" keystone_authtoken.password)" = "$SERVICE_PASSWORD" ]
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" DEFAULT.transport_url)" = "$FAKE_TRANSPORT_URL" ]
    [ "$(toml "$TRUSTPOOL_SHIM_CONF" DEFAULT.transport_url)" = "$FAKE_TRANSPORT_URL" ]
}

@test "post-config, all-in-one with swtpm: the local swtpm CA is trusted, event logs required" {
    TRUSTPOOL_USE_SWTPM=True
    load_plugin trustpool-attestation,trustpool-agent
    echo "device $TRUSTPOOL_DEV_DIR/tpmrm1" | _trustpool_install_file "$TRUSTPOOL_SWTPM_DIR/tpm" 0644
    phase stack post-config
    [ -f "$TRUSTPOOL_EK_ROOTS_DIR/swtpm-localca-rootca-cert.pem" ]
    [ -f "$TRUSTPOOL_EK_ROOTS_DIR/issuercert.pem" ]
    # The simulated boot has an event log: the service stays strict.
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" attestation.allow_missing_event_log)" = false ]
    [ "$(toml "$TRUSTPOOL_AGENT_CONF" tpm.device tpm.event_log)" = "$TRUSTPOOL_DEV_DIR/tpmrm1
$TRUSTPOOL_SWTPM_EVENT_LOG" ]
}

@test "post-config, all-in-one with a swtpm without simulated boot: missing event logs allowed" {
    TRUSTPOOL_USE_SWTPM=True TRUSTPOOL_SWTPM_SIMULATED_BOOT=False
    load_plugin trustpool-attestation,trustpool-agent
    echo "device $TRUSTPOOL_DEV_DIR/tpmrm1" | _trustpool_install_file "$TRUSTPOOL_SWTPM_DIR/tpm" 0644
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" attestation.allow_missing_event_log)" = true ]
}

@test "post-config, controller without TPM and without agent: event logs required" {
    TRUSTPOOL_USE_SWTPM=True TRUSTPOOL_SWTPM_SIMULATED_BOOT=False
    load_plugin trustpool-attestation
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" attestation.allow_missing_event_log)" = false ]
}

@test "post-config, service without swtpm: event logs required, no local CA" {
    load_plugin trustpool-attestation
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_ATTESTATION_CONF" attestation.allow_missing_event_log)" = false ]
    [ -z "$(ls "$TRUSTPOOL_EK_ROOTS_DIR")" ]
}

@test "post-config, agent: TPM, nova-compute's host name, state dir, log access" {
    load_plugin trustpool-agent,n-cpu
    iniset "$NOVA_CPU_CONF" DEFAULT host compute-7
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_AGENT_CONF" DEFAULT.host tpm.device agent.state_dir launch.injector)" = "compute-7
/dev/tpmrm0
$DATA_DIR/trustpool/agent
qemu-guest-agent" ]
    # nova-compute sends the versioned instance.create.end launches bind on.
    [ "$(iniget "$NOVA_CPU_CONF" notifications notification_format)" = both ]
    [ "$(iniget "$NOVA_CPU_CONF" oslo_messaging_notifications driver)" = messagingv2 ]
    grep -q "^z /sys/kernel/security/tpm\[0-9\]\*/binary_bios_measurements 0440 root $(id -gn) -$" \
        "$TRUSTPOOL_CONF_DIR/agent-tmpfiles.conf"
    [ ! -e "$TRUSTPOOL_ATTESTATION_CONF" ]
    refute called create_service_user
}

@test "post-config, agent: the fake virt driver gets the directory injector; an operator's notification format is kept" {
    VIRT_DRIVER=fake
    load_plugin trustpool-agent,n-cpu
    iniset "$NOVA_CPU_CONF" notifications notification_format versioned
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_AGENT_CONF" launch.injector launch.directory)" = "directory
$DATA_DIR/trustpool/instances" ]
    [ "$(iniget "$NOVA_CPU_CONF" notifications notification_format)" = versioned ]
}

@test "post-config, agent on a swtpm socket" {
    TRUSTPOOL_USE_SWTPM=True
    load_plugin trustpool-agent
    echo "swtpm 127.0.0.1:2321" | _trustpool_install_file "$TRUSTPOOL_SWTPM_DIR/tpm" 0644
    phase stack post-config
    [ "$(toml "$TRUSTPOOL_AGENT_CONF" tpm.swtpm)" = 127.0.0.1:2321 ]
    run toml "$TRUSTPOOL_AGENT_CONF" tpm.device
    [ "$status" -ne 0 ]
}

@test "post-config, filter shim: TrustedFilter added to nova.conf exactly once, built-ins kept" {
    load_plugin trustpool-filter-shim,n-sch
    iniset "$NOVA_CONF" filter_scheduler enabled_filters ComputeFilter,ImagePropertiesFilter
    iniset "$NOVA_CPU_CONF" DEFAULT host compute-1
    cpu_before=$(cat "$NOVA_CPU_CONF")
    phase stack post-config
    phase stack post-config
    [ "$(iniget "$NOVA_CONF" filter_scheduler enabled_filters)" = ComputeFilter,ImagePropertiesFilter,TrustedFilter ]
    [ "$(iniget_multiline "$NOVA_CONF" filter_scheduler available_filters)" = "nova.scheduler.filters.all_filters
trustpool_filter.TrustedFilter" ]
    [ "$(iniget "$NOVA_CONF" trustpool shim_socket)" = "$TRUSTPOOL_SHIM_SOCKET" ]
    [ "$(iniget "$NOVA_CONF" trustpool shim_timeout)" = 0.5 ]
    [ "$(iniget "$NOVA_CONF" trustpool verdict_source)" = snapshot ]
    [ "$(iniget "$NOVA_CONF" trustpool snapshot_file)" = "$TRUSTPOOL_SHIM_SNAPSHOT" ]
    [ "$(toml "$TRUSTPOOL_SHIM_CONF" filter_shim.snapshot_file filter_shim.snapshot_file_group filter_shim.snapshot_file_mode)" = \
        "$TRUSTPOOL_SHIM_SNAPSHOT

0640" ]
    [ "$(cat "$NOVA_CPU_CONF")" = "$cpu_before" ]
    [ "$(toml "$TRUSTPOOL_SHIM_CONF" filter_shim.socket_path filter_shim.socket_mode filter_shim.verdict_public_key)" = \
        "$TRUSTPOOL_SHIM_SOCKET
0660
$TRUSTPOOL_CONF_DIR/verdict_public_key.pem" ]
}

@test "post-config, filter shim: an operator's available_filters are kept, ours appended once" {
    NOVA_FILTERS=ComputeFilter,ImagePropertiesFilter
    load_plugin trustpool-filter-shim
    iniset "$NOVA_CONF" filter_scheduler available_filters nova.scheduler.filters.all_filters
    iniadd "$NOVA_CONF" filter_scheduler available_filters my.filters.Mine
    phase stack post-config
    phase stack post-config
    [ "$(iniget_multiline "$NOVA_CONF" filter_scheduler available_filters)" = "nova.scheduler.filters.all_filters
my.filters.Mine
trustpool_filter.TrustedFilter" ]
    # No enabled_filters in nova.conf yet: DevStack's list plus ours.
    [ "$(iniget "$NOVA_CONF" filter_scheduler enabled_filters)" = ComputeFilter,ImagePropertiesFilter,TrustedFilter ]
}

@test "post-config, filter shim with TRUSTPOOL_CONFIGURE_NOVA=False: nova.conf untouched" {
    TRUSTPOOL_CONFIGURE_NOVA=False
    load_plugin trustpool-filter-shim
    phase stack post-config
    [ ! -e "$NOVA_CONF" ]
    [ -f "$TRUSTPOOL_SHIM_CONF" ]
}

# ------------------------------------------------------------------ extra

@test "extra, attestation: key created once, then devstack@trustpool-attestation as Type=notify" {
    load_plugin trustpool-attestation
    phase stack post-config
    phase stack extra
    called "trustpool-attestation create-key $TRUSTPOOL_SIGNING_KEY"
    called "trustpool-attestation create-launch-key $TRUSTPOOL_LAUNCH_KEY"
    called "trustpool-attestation create-policy-key $TRUSTPOOL_POLICY_KEY"
    grep -qx "run_process trustpool-attestation $FAKE_BIN/trustpool-attestation -config-file $TRUSTPOOL_ATTESTATION_CONF" "$CALLS"
    grep -qx "wait_for_service 3 http://127.0.0.1:9780/healthz" "$CALLS"
    grep -qx 'Type=notify' "$SYSTEMD_DIR/devstack@trustpool-attestation.service.d/trustpool.conf"
    grep -qx 'RestartPreventExitStatus=2' "$SYSTEMD_DIR/devstack@trustpool-attestation.service.d/trustpool.conf"
    # The drop-in is in place before the unit starts.
    [ "$(grep -n 'systemctl daemon-reload' "$CALLS" | head -n1 | cut -d: -f1)" -lt \
        "$(grep -n '^run_process trustpool-attestation' "$CALLS" | cut -d: -f1)" ]
    [ -s "$TRUSTPOOL_SIGNING_KEY" ] && [ -s "$TRUSTPOOL_LAUNCH_KEY" ] && [ -s "$TRUSTPOOL_POLICY_KEY" ]
    : > "$CALLS"
    phase stack extra
    refute called create-key
    refute called create-launch-key
    refute called create-policy-key
}

@test "extra, filter shim: pins the service's public key, starts, makes the trusted flavor" {
    load_plugin trustpool-filter-shim,n-api
    serve_api
    printf '#!/bin/bash\necho "openstack $*" >> "%s"\n[[ $* != *"flavor show"* ]]\n' "$CALLS" > "$FAKE_ROOT/fakebin/openstack"
    phase stack post-config
    phase stack extra
    grep -qx "trustpool key list --use verdict --long -f value -c Public Key" "$CALLS"
    [ "$(cat "$TRUSTPOOL_PUBLIC_KEY")" = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA
-----END PUBLIC KEY-----" ]
    [ "$(stat -c %a "$TRUSTPOOL_PUBLIC_KEY")" = 644 ]
    # The key is pinned before the shim starts.
    [ "$(grep -n '^trustpool key list' "$CALLS" | cut -d: -f1)" -lt \
        "$(grep -n '^run_process trustpool-filter-shim' "$CALLS" | cut -d: -f1)" ]
    refute called curl
    grep -qx "run_process trustpool-filter-shim $FAKE_BIN/trustpool-filter-shim -config-file $TRUSTPOOL_SHIM_CONF" "$CALLS"
    grep -qx 'RuntimeDirectory=trustpool' "$SYSTEMD_DIR/devstack@trustpool-filter-shim.service.d/trustpool.conf"
    called "openstack flavor create --ram 512 --disk 1 --vcpus 1 trusted"
    called "openstack flavor set --property trust:trusted_host=trusted trusted"
}

@test "extra, filter shim: no public key means stack.sh stops (never a shim without a pinned key)" {
    load_plugin trustpool-filter-shim
    phase stack post-config
    run phase stack extra
    [ "$status" -ne 0 ]
    [[ $output == *"the service has no verdict public key"* ]]
    refute called "run_process trustpool-filter-shim"
    [ ! -e "$TRUSTPOOL_PUBLIC_KEY" ]
}

@test "extra, filter shim: a failing key list stops stack.sh too" {
    load_plugin trustpool-filter-shim
    printf '#!/bin/bash\necho "trustpool: attestation service unreachable" >&2\nexit 5\n' > "$FAKE_BIN/trustpool"
    phase stack post-config
    run phase stack extra
    [ "$status" -ne 0 ]
    [[ $output == *"trustpool: attestation service unreachable"* ]]
    [[ $output == *"trustpool key list failed"* ]]
    refute called "run_process trustpool-filter-shim"
}

@test "extra: the CLI runs as DevStack's admin whatever OS_* the caller has" {
    load_plugin trustpool-filter-shim,trustpool-agent
    serve_api
    phase stack post-config
    export OS_CLOUD=devstack OS_PROJECT_ID=demo-project OS_ATTESTATION_URL=http://elsewhere OS_USERNAME=demo
    phase stack extra
    unset OS_CLOUD OS_PROJECT_ID OS_ATTESTATION_URL OS_USERNAME
    [ "$(calls_of trustpool-auth | sort -u)" = "trustpool-auth OS_AUTH_URL=http://192.0.2.10/identity OS_USERNAME=admin OS_PASSWORD=secretadmin OS_PROJECT_NAME=admin OS_USER_DOMAIN_ID=default OS_PROJECT_DOMAIN_ID=default OS_REGION_NAME=RegionOne OS_CLOUD=unset OS_PROJECT_ID=unset OS_ATTESTATION_URL=unset" ]
    [ "$(calls_of trustpool-auth | wc -l)" -ge 3 ]
}

@test "extra, agent: TPM group, log access as root, then learns the profile" {
    load_plugin trustpool-agent
    serve_api
    phase stack post-config
    run phase stack extra
    [ "$status" -eq 0 ]
    [[ $output == *"learned profile devstack from $(hostname)"* ]]
    dropin=$SYSTEMD_DIR/devstack@trustpool-agent.service.d/trustpool.conf
    grep -qx 'SupplementaryGroups=tss' "$dropin"
    grep -qx "ExecStartPre=+/usr/bin/systemd-tmpfiles --create $TRUSTPOOL_CONF_DIR/agent-tmpfiles.conf" "$dropin"
    grep -qx "run_process trustpool-agent $FAKE_BIN/trustpool-agent -config-file $TRUSTPOOL_AGENT_CONF" "$CALLS"
    grep -qx "trustpool profile show devstack -f value -c description" "$CALLS"
    grep -qx "trustpool profile learn devstack --host $(hostname) --description learned by DevStack from $(hostname) --wait-timeout 3s" "$CALLS"
    [ "$(cat "$FAKE_API/profile")" = "learned by DevStack from $(hostname)" ]
    refute called curl
}

@test "extra, agent on a swtpm without simulated boot: no profile learned, and a warning why" {
    TRUSTPOOL_USE_SWTPM=True TRUSTPOOL_SWTPM_SIMULATED_BOOT=False
    load_plugin trustpool-agent
    serve_api
    echo "swtpm 127.0.0.1:2321" | _trustpool_install_file "$TRUSTPOOL_SWTPM_DIR/tpm" 0644
    phase stack install
    phase stack post-config
    run phase stack extra
    [ "$status" -eq 0 ]
    refute called tpm-boot-seed
    refute called "trustpool profile learn"
    [[ $(calls_of warn) == *"not learning profile devstack: this node's swtpm has no measured boot (TRUSTPOOL_SWTPM_SIMULATED_BOOT=False)"* ]]
}

@test "extra, agent: the profile is learned from nova-compute's host name" {
    load_plugin trustpool-agent,n-cpu
    iniset "$NOVA_CPU_CONF" DEFAULT host compute-7
    serve_api
    phase stack post-config
    phase stack extra
    called "trustpool profile learn devstack --host compute-7 --description learned by DevStack from compute-7"
}

@test "extra, agent: an existing profile is not learned again" {
    load_plugin trustpool-agent
    phase stack post-config
    run phase stack extra
    [ "$status" -eq 0 ]
    [[ $output == *"profile devstack exists; not learning it again"* ]]
    called "trustpool profile show devstack"
    refute called "trustpool profile learn"
}

@test "extra, agent: learning is retried until the host has been attested" {
    load_plugin trustpool-agent
    TRUSTPOOL_WAIT_TIMEOUT=30
    serve_api
    echo "fail 2" > "$FAKE_API/learn"
    phase stack post-config
    run phase stack extra
    [ "$status" -eq 0 ]
    [ "$(calls_of trustpool | grep -c '^trustpool profile learn')" = 3 ]
    [[ $output == *"learned profile devstack"* ]]
}

@test "extra, agent: a host never attested stops stack.sh after TRUSTPOOL_WAIT_TIMEOUT" {
    load_plugin trustpool-agent
    TRUSTPOOL_WAIT_TIMEOUT=1
    serve_api
    echo never > "$FAKE_API/learn"
    phase stack post-config
    run phase stack extra
    [ "$status" -ne 0 ]
    [[ $output == *"could not learn profile devstack from $(hostname)"* ]]
    [ ! -e "$FAKE_API/profile" ]
}

@test "extra, agent: a host that fails the profile learned from it stops stack.sh" {
    load_plugin trustpool-agent
    serve_api
    echo unsatisfied > "$FAKE_API/learn"
    phase stack post-config
    run phase stack extra
    [ "$status" -ne 0 ]
    [[ $output == *"was not appraised as satisfying the profile devstack learned from it"* ]]
    [ "$(calls_of trustpool | grep -c '^trustpool profile learn')" = 1 ]
}

@test "extra, agent: another compute node learning the profile first is fine" {
    load_plugin trustpool-agent
    serve_api
    echo conflict > "$FAKE_API/learn"
    phase stack post-config
    run phase stack extra
    [ "$status" -eq 0 ]
    [[ $output == *"profile devstack exists; not learning it again"* ]]
    [ "$(calls_of trustpool | grep -c '^trustpool profile learn')" = 1 ]
}

# ------------------------------------------------------------------ unstack, clean

@test "unstack stops every Trustpool service" {
    load_plugin "$ALL"
    phase unstack
    for s in trustpool-attestation trustpool-filter-shim trustpool-agent trustpool-swtpm; do
        grep -qx "stop_process $s" "$CALLS"
    done
}

# The whole life cycle, per combination of enabled services: stack twice
# (the second run changes nothing), unstack, clean: nothing the plugin
# created is left.
lifecycle() {
    load_plugin "$1"
    swtpm_appears
    serve_api
    before=$(tree)
    stack_all
    first=$(cd "$FAKE_ROOT" && find etc/trustpool etc/systemd opt -type f -print0 | sort -z | xargs -0 sha256sum)
    nova_first=$(cat "$NOVA_CONF" 2> /dev/null || true)
    stack_all
    second=$(cd "$FAKE_ROOT" && find etc/trustpool etc/systemd opt -type f -print0 | sort -z | xargs -0 sha256sum)
    [ "$first" = "$second" ] || { diff <(echo "$first") <(echo "$second"); return 1; }
    [ "$(cat "$NOVA_CONF" 2> /dev/null || true)" = "$nova_first" ]
    phase unstack
    phase clean
    [ "$(tree)" = "$before" ] || { diff <(echo "$before") <(tree); return 1; }
}

@test "life cycle: attestation service only (controller without Nova scheduler)" {
    lifecycle trustpool-attestation,key,mysql
}

@test "life cycle: filter shim only (scheduler node)" {
    lifecycle trustpool-filter-shim,n-sch,n-api
}

@test "life cycle: agent only (compute node with a TPM)" {
    lifecycle trustpool-agent,n-cpu
}

@test "life cycle: agent on a TPM-less compute node (swtpm)" {
    TRUSTPOOL_USE_SWTPM=True
    lifecycle trustpool-agent,n-cpu
    grep -qx 'stop_process trustpool-swtpm' "$CALLS"
}

@test "life cycle: all-in-one" {
    TRUSTPOOL_USE_SWTPM=True
    lifecycle "$ALL"
}
