#!/usr/bin/env bash
# Runs the plugin under our DevStack fakes for devstack_test.go:
#
#   driver.bash ROOT SERVICES STEP...
#
# ROOT is the fake root, SERVICES the enabled services (comma-separated),
# each STEP either stack:PHASE, unstack, clean, or a plugin function name.
# With REAL_KEYSTONE=1 the Keystone helpers run against a real Keystone
# (keystone-fakes.bash).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
FAKE_ROOT=$1 ENABLED=$2
shift 2
# shellcheck source=tests/devstack/fakes.bash
source "$here/fakes.bash"
if [[ -n ${REAL_KEYSTONE:-} ]]; then
    # shellcheck source=tests/devstack/keystone-fakes.bash
    source "$here/keystone-fakes.bash"
fi
ENABLED_SERVICES=$ENABLED
# shellcheck source=devstack/settings
source "$here/../../devstack/settings"
# shellcheck source=devstack/lib/trustpool
source "$here/../../devstack/lib/trustpool"
for step in "$@"; do
    case $step in
        stack:*)
            # shellcheck source=devstack/plugin.sh
            source "$here/../../devstack/plugin.sh" stack "${step#stack:}" ;;
        unstack | clean)
            # shellcheck source=devstack/plugin.sh
            source "$here/../../devstack/plugin.sh" "$step" ;;
        *) "$step" ;;
    esac
done
