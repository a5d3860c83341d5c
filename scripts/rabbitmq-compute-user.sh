#!/usr/bin/env bash
# Grant a compute node's RabbitMQ user exactly what trustpool-agent needs on
# the bus, and nothing of any other host: it can serve only its own
# trustpool-agent.<host> topic and call only the attestation service's
# trustpool-attestation topic (docs/bus-trust.md explains each permission).
#
# Usage: scripts/rabbitmq-compute-user.sh [-p VHOST] [-e EXCHANGE] USER HOST
#   USER      an existing RabbitMQ user (rabbitmqctl add_user USER) used only
#             by this host's trustpool-agent
#   HOST      the agent's [DEFAULT] host (Nova's compute host name)
#   VHOST     the vhost of transport_url (default /)
#   EXCHANGE  [DEFAULT] control_exchange (default trustpool)
# It runs `rabbitmqctl` from PATH against the local node (set RABBITMQ_NODENAME
# or run it where rabbitmqctl reaches the cluster).
set -euo pipefail

vhost=/
exchange=trustpool
while getopts p:e: opt; do
  case $opt in
    p) vhost=$OPTARG ;;
    e) exchange=$OPTARG ;;
    *) echo "usage: $0 [-p VHOST] [-e EXCHANGE] USER HOST" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [[ $# -ne 2 ]]; then
  echo "usage: $0 [-p VHOST] [-e EXCHANGE] USER HOST" >&2
  exit 2
fi
user=$1
host=$2
# Host names and exchange names go into regular expressions: allow only
# what a DNS name or an exchange name holds, and escape the dots.
for v in "$host" "$exchange"; do
  if [[ ! $v =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
    echo "$0: $v: only letters, digits, '.', '_' and '-' are allowed" >&2
    exit 2
  fi
done
h=${host//./\\.}
x=${exchange//./\\.}
id='[0-9a-f]{32}' # oslo's uuid4 hex in fanout and reply queue names

# configure: declare (and, unavoidably, delete) the exchanges, its queues
#            and its private fanout and reply queues;
# write:     publish to the control exchange (topic permissions below say
#            which routing keys), reply through the default exchange, bind
#            its own queues;
# read:      bind to the exchanges, consume its own queues.
rabbitmqctl set_permissions -p "$vhost" "$user" \
  "^($x|trustpool-agent|trustpool-agent\\.$h|trustpool-agent_fanout|trustpool-agent_fanout_$id|reply_$id)\$" \
  "^($x|amq\\.default|trustpool-agent|trustpool-agent\\.$h|trustpool-agent_fanout_$id|reply_$id)\$" \
  "^($x|trustpool-agent|trustpool-agent\\.$h|trustpool-agent_fanout|trustpool-agent_fanout_$id|reply_$id)\$"
# On the control exchange: publish only to the attestation service's topic,
# bind only the agent topic and this host's own queue.
rabbitmqctl set_topic_permissions -p "$vhost" "$user" "$exchange" \
  '^trustpool-attestation$' \
  "^trustpool-agent(\\.$h)?\$"
