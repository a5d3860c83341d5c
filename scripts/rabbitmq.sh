#!/usr/bin/env bash
# Private RabbitMQ node on 127.0.0.1 for demos and manual testing: its own node
# name, ports (free ports in 10000-32000), data/log dirs and Erlang cookie
# under DIR. It never touches the packaged rabbit@<host> node.
#
# Usage: scripts/rabbitmq.sh start DIR   start (or reuse) the node; prints shell
#                                        assignments: TRANSPORT_URL=... AMQP_PORT=...
#                                        NODENAME=... (also saved in DIR/env)
#        scripts/rabbitmq.sh stop DIR    stop it (a no-op when it is not running)
#        scripts/rabbitmq.sh ctl DIR ARGS...   rabbitmqctl against the node
set -euo pipefail

cmd=${1:-}
R=${2:-}
if [[ -z $cmd || -z $R ]]; then
  echo "usage: $0 start|stop|ctl DIR [args]" >&2
  exit 2
fi
mkdir -p "$R"
R=$(cd "$R" && pwd)

# Upstream scripts: the /usr/sbin wrappers would su to the rabbitmq user.
RBIN=/usr/lib/rabbitmq/bin

free_port() { # a port in 10000-32000 that nothing listens on
  local p
  for _ in $(seq 200); do
    p=$((10000 + RANDOM % 22001))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo "no free port" >&2
  return 1
}

node_env() {
  # shellcheck source=/dev/null
  . "$R/env"
  export HOME=$R/home
  export RABBITMQ_NODENAME=$NODENAME
  export RABBITMQ_DIST_PORT=$DIST_PORT
  export RABBITMQ_CONFIG_FILE=$R/rabbitmq
  export RABBITMQ_ADVANCED_CONFIG_FILE=$R/advanced.config
  export RABBITMQ_CONF_ENV_FILE=$R/rabbitmq-env.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$R/enabled_plugins
  export RABBITMQ_MNESIA_BASE=$R/mnesia
  export RABBITMQ_LOG_BASE=$R/log
  export RABBITMQ_PID_FILE=$R/rabbit.pid
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export PATH=$RBIN:$PATH
}

running() {
  [[ -f $R/rabbit.pid ]] && kill -0 "$(cat "$R/rabbit.pid")" 2>/dev/null
}

case $cmd in
start)
  if [[ ! -x $RBIN/rabbitmq-server ]]; then
    echo "rabbitmq-server is not installed; run: make deps" >&2
    exit 1
  fi
  if [[ -f $R/env ]] && running; then
    cat "$R/env"
    exit 0
  fi
  AMQP_PORT=$(free_port)
  DIST_PORT=$(free_port)
  while [[ $DIST_PORT == "$AMQP_PORT" ]]; do DIST_PORT=$(free_port); done
  cat > "$R/env" <<ENV
TRANSPORT_URL=rabbit://guest:guest@127.0.0.1:$AMQP_PORT/
AMQP_PORT=$AMQP_PORT
DIST_PORT=$DIST_PORT
NODENAME=demo$AMQP_PORT@localhost
ENV
  node_env
  mkdir -p "$R/home" "$R/mnesia" "$R/log"
  if [[ ! -f $R/home/.erlang.cookie ]]; then
    head -c 64 /dev/urandom | base64 | tr -dc A-Za-z | head -c 24 > "$R/home/.erlang.cookie"
    chmod 400 "$R/home/.erlang.cookie"
  fi
  : > "$R/rabbitmq-env.conf"
  echo '[].' > "$R/enabled_plugins"
  cat > "$R/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
log.console = false
CONF
  rabbitmq-server -detached
  # Not await_startup: it fails at once before the node registers with epmd.
  if ! rabbitmqctl wait --timeout 90 "$RABBITMQ_PID_FILE" >/dev/null 2>&1; then
    echo "rabbitmq did not start; log in $R/log" >&2
    tail -n 30 "$R/log/"*.log >&2 || true
    exit 1
  fi
  cat "$R/env"
  ;;
stop)
  if [[ ! -f $R/env ]] || ! running; then
    exit 0
  fi
  P=$(cat "$R/rabbit.pid")
  kill -TERM "$P"
  for _ in $(seq 600); do
    kill -0 "$P" 2>/dev/null || exit 0
    sleep 0.1
  done
  kill -KILL "$P" 2>/dev/null || true
  ;;
ctl)
  node_env
  shift 2
  exec rabbitmqctl -n "$NODENAME" "$@"
  ;;
*)
  echo "usage: $0 start|stop|ctl DIR [args]" >&2
  exit 2
  ;;
esac
