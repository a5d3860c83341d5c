# Helpers for the plugin's bats tests: a fresh fake DevStack per test
# (fakes.bash), loading the plugin the way stack.sh does, running phases.
# shellcheck shell=bash
# shellcheck disable=SC2034 # variables the plugin reads

REPO=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)

# fake_devstack: the fakes under a fresh root, with prebuilt stand-in
# binaries that record their arguments (the CLI's: fake_cli), tpm-boot-seed
# among them.
fake_devstack() {
    FAKE_ROOT=$BATS_TEST_TMPDIR/root
    mkdir -p "$FAKE_ROOT"
    # shellcheck source=tests/devstack/fakes.bash
    source "$BATS_TEST_DIRNAME/fakes.bash"
    FAKE_BIN=$BATS_TEST_TMPDIR/prebuilt
    mkdir -p "$FAKE_BIN"
    local b
    for b in trustpool-attestation trustpool-filter-shim trustpool-agent; do
        # create-key PATH and create-launch-key PATH write the key, as the
        # real commands do.
        # shellcheck disable=SC2016 # the stand-in's own script
        printf '#!/bin/bash\necho "%s $*" >> "%s"\n[[ $1 != create-key && $1 != create-launch-key ]] || echo key > "$2"\n' \
            "$b" "$CALLS" > "$FAKE_BIN/$b"
        chmod +x "$FAKE_BIN/$b"
    done
    # The seeding tool's stand-in writes its -log as the real one does.
    # shellcheck disable=SC2016 # the stand-in's own script
    printf '#!/bin/bash\necho "tpm-boot-seed $*" >> "%s"\nwhile (($#)); do [[ $1 != -log ]] || echo "simulated event log" > "$2"; shift; done\n' \
        "$CALLS" > "$FAKE_BIN/tpm-boot-seed"
    chmod +x "$FAKE_BIN/tpm-boot-seed"
    fake_cli
    TRUSTPOOL_BIN_DIR=$FAKE_BIN
    # No TPM on the test machine unless a test makes one.
    TRUSTPOOL_USE_SWTPM=${TRUSTPOOL_USE_SWTPM:-False}
}

# load_plugin SERVICES: enable the services (comma-separated), then source
# settings and lib like stack.sh does.
load_plugin() {
    ENABLED_SERVICES=$1
    # shellcheck source=devstack/settings
    source "$REPO/devstack/settings"
    # shellcheck source=devstack/lib/trustpool
    source "$REPO/devstack/lib/trustpool"
}

# phase MODE [PHASE]: run plugin.sh as DevStack does (sourced).
phase() {
    # shellcheck source=devstack/plugin.sh
    source "$REPO/devstack/plugin.sh" "$@"
}

# stack_all: every stack phase in stack.sh's order.
stack_all() {
    local p
    for p in pre-install install post-config extra test-config; do
        phase stack "$p"
    done
}

# toml FILE KEY...: the values at the dotted keys, one per line, read with
# Python's tomllib (a TOML parser independent of the plugin and of Go).
toml() {
    /usr/bin/python3 - "$@" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    doc = tomllib.load(f)
for key in sys.argv[2:]:
    v = doc
    for part in key.split("."):
        v = v[part]
    print(v if not isinstance(v, bool) else str(v).lower())
EOF
}

# tree: every file and directory under the fake root except the fakes'
# own bookkeeping and Nova's files, for before/after comparisons.
tree() {
    (cd "$FAKE_ROOT" && find . \( -path ./fakebin -o -path ./calls -o -path ./etc/nova \) -prune \
        -o -print | sort)
}

# nova_line_count OPTION VALUE: how many "OPTION = ...VALUE..." lines
# nova.conf has.
nova_count() { grep -c -- "^$1 = .*$2" "$NOVA_CONF" || true; }

# tpm_chip N virtual|platform: a TPM as the kernel shows it in sysfs and
# /dev (tpmN, tpmrmN); the vtpm proxy's has no parent device.
tpm_chip() {
    local n=$1 where=devices/virtual/tpm
    [[ $2 == virtual ]] || where=devices/platform/MSFT0101:00/tpm
    mkdir -p "$FAKE_ROOT/sys/$where/tpm$n"
    ln -sfn "../../$where/tpm$n" "$FAKE_ROOT/sys/class/tpm/tpm$n"
    touch "$FAKE_ROOT/dev/tpm$n" "$FAKE_ROOT/dev/tpmrm$n"
}

# swtpm_appears: starting trustpool-swtpm makes a vtpm proxy TPM, number 1;
# stopping it removes the TPM again.
swtpm_appears() {
    # shellcheck disable=SC2016 # evaluated later by the fakes
    FAKE_ON_START[trustpool-swtpm]='tpm_chip 1 virtual'
    # shellcheck disable=SC2016 # evaluated later by the fakes
    FAKE_ON_STOP[trustpool-swtpm]='rm -rf "$FAKE_ROOT"/dev/tpm*1 "$FAKE_ROOT"/sys/class/tpm/tpm1 "$FAKE_ROOT/sys/devices"'
}

# fake_cli: the stand-in trustpool CLI. It records its arguments, and the
# credentials it was given as "trustpool-auth VAR=VALUE ...". Until
# serve_api, it prints nothing and succeeds. After serve_api, it answers
# like a service whose state is in $FAKE_API (outside the fake root):
#   key list          a public key PEM
#   profile show      the profile's description ($FAKE_API/profile), or
#                     exit 4 (not found) when there is none
#   profile learn     stores --description as the profile and succeeds,
#                     unless $FAKE_API/learn says otherwise: "fail N" fails
#                     the next N times without storing (not attested yet),
#                     "unsatisfied" stores, then fails (the host does not
#                     satisfy it), "conflict" fails because another node
#                     stored one just before, "never" always fails.
fake_cli() {
    FAKE_API=$BATS_TEST_TMPDIR/api
    mkdir -p "$FAKE_API"
    cat > "$FAKE_BIN/trustpool" <<EOF
#!/bin/bash
api=$FAKE_API
echo "trustpool \$*" >> "$CALLS"
echo "trustpool-auth OS_AUTH_URL=\$OS_AUTH_URL OS_USERNAME=\$OS_USERNAME OS_PASSWORD=\$OS_PASSWORD OS_PROJECT_NAME=\$OS_PROJECT_NAME OS_USER_DOMAIN_ID=\$OS_USER_DOMAIN_ID OS_PROJECT_DOMAIN_ID=\$OS_PROJECT_DOMAIN_ID OS_REGION_NAME=\$OS_REGION_NAME OS_CLOUD=\${OS_CLOUD-unset} OS_PROJECT_ID=\${OS_PROJECT_ID-unset} OS_ATTESTATION_URL=\${OS_ATTESTATION_URL-unset}" >> "$CALLS"
[[ -e \$api/serving ]] || exit 0
EOF
    cat >> "$FAKE_BIN/trustpool" <<'EOF'
case "$1 $2" in
    "key list")
        printf -- '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n\n' ;;
    "profile show")
        [[ -f $api/profile ]] || { echo "trustpool: profile not found" >&2; exit 4; }
        cat "$api/profile" ;;
    "profile learn")
        desc=""
        while (($#)); do
            [[ $1 != --description ]] || desc=$2
            shift
        done
        read -r what n 2> /dev/null < "$api/learn" || what=""
        case $what in
            fail)
                if ((n > 0)); then
                    echo "fail $((n - 1))" > "$api/learn"
                    echo "trustpool: host has no verified evidence yet" >&2
                    exit 1
                fi ;;
            unsatisfied)
                echo "$desc" > "$api/profile"
                echo "trustpool: host does not satisfy the profile learned from it" >&2
                exit 1 ;;
            conflict)
                echo "learned by DevStack from another-compute" > "$api/profile"
                echo "trustpool: profile exists" >&2
                exit 1 ;;
            never)
                echo "trustpool: host not found" >&2
                exit 4 ;;
        esac
        echo "$desc" > "$api/profile" ;;
esac
EOF
    chmod +x "$FAKE_BIN/trustpool"
}

# serve_api: the stand-in CLI answers (fake_cli).
serve_api() { touch "$FAKE_API/serving"; }

# refute COMMAND...: fail (with the command) when COMMAND succeeds. A bare
# `! cmd` does not fail a bats test unless it is the test's last line.
refute() {
    if "$@"; then
        echo "expected to fail: $*" >&2
        return 1
    fi
}
