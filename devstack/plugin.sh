#!/bin/bash
# Trustpool DevStack plugin: the phase dispatcher. DevStack sources this file
# as `plugin.sh MODE [PHASE]`; the functions are in lib/trustpool, the
# defaults in settings.

# shellcheck source=devstack/lib/trustpool
source "$(dirname "${BASH_SOURCE[0]}")/lib/trustpool"

if is_trustpool_enabled; then
    case $1 in
        stack)
            case $2 in
                pre-install)
                    echo_summary "Trustpool: TPM for a TPM-less compute node"
                    pre_install_trustpool
                    ;;
                install)
                    echo_summary "Installing Trustpool"
                    install_trustpool
                    ;;
                post-config)
                    echo_summary "Configuring Trustpool"
                    configure_trustpool
                    ;;
                extra)
                    echo_summary "Starting Trustpool"
                    start_trustpool
                    ;;
            esac
            ;;
        unstack)
            echo_summary "Stopping Trustpool"
            stop_trustpool
            ;;
        clean)
            echo_summary "Removing Trustpool's files"
            cleanup_trustpool
            ;;
    esac
fi
