# DevStack's Keystone helpers done for real, with the openstack client,
# against the Keystone in $OS_AUTH_URL as its admin (the test harness's
# Keystone; devstack_test.go sets the OS_* variables). Sourced after
# fakes.bash, they replace its recorders. They follow DevStack's documented
# behaviour: get-or-create, so that running them twice changes nothing.
# shellcheck shell=bash

# The real client, not fakes.bash's recorder.
rm -f "$FAKE_ROOT/fakebin/openstack"
command -v openstack > /dev/null || { echo "keystone-fakes.bash: no openstack client" >&2; exit 1; }

# create_service_user NAME [ROLE]: user NAME (password $SERVICE_PASSWORD)
# with role service, plus ROLE, on project $SERVICE_PROJECT_NAME.
create_service_user() {
    record create_service_user "$@"
    local user role
    user=$(openstack user show "$1" --domain "$SERVICE_DOMAIN_NAME" -f value -c id 2> /dev/null) ||
        user=$(openstack user create "$1" --domain "$SERVICE_DOMAIN_NAME" \
            --password "$SERVICE_PASSWORD" -f value -c id) || return 1
    for role in service ${2:+"$2"}; do
        openstack role add --user "$user" --project "$SERVICE_PROJECT_NAME" \
            --project-domain "$SERVICE_DOMAIN_NAME" "$role" || return 1
    done
}

# get_or_create_service NAME TYPE DESCRIPTION: prints the service's id.
get_or_create_service() {
    record get_or_create_service "$@"
    openstack service show "$1" -f value -c id 2> /dev/null ||
        openstack service create --name "$1" --description "$3" "$2" -f value -c id
}

# get_or_create_endpoint SERVICE REGION PUBLIC [ADMIN] [INTERNAL]: one
# endpoint per interface given a URL.
get_or_create_endpoint() {
    record get_or_create_endpoint "$@"
    local service=$1 region=$2 iface url
    shift 2
    for iface in public admin internal; do
        url=${1:-}
        shift || true
        [[ -n $url ]] || continue
        if [[ -z $(openstack endpoint list --service "$service" --interface "$iface" \
            --region "$region" -f value -c ID) ]]; then
            openstack endpoint create --region "$region" "$service" "$iface" "$url" > /dev/null || return 1
        fi
    done
}
