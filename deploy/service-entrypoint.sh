#!/bin/sh
# Services find each other at settings.service_url(name) = http://$RELIEF_HOST:<port>, one host for
# all four. In a container RELIEF_HOST is 0.0.0.0 (to listen on every interface), and a connection
# to 0.0.0.0 reaches this container itself, so each container forwards the other services' ports on
# 127.0.0.1 to their containers (Docker's DNS balances over replicas). Then the command runs.
set -eu

own=""
for argument in "$@"; do
  case "$argument" in
    services.*) own="${argument#services.}" ;;
  esac
done

for pair in intake:8001 eligibility:8002 disbursement:8003 reporting:8004; do
  name="${pair%%:*}"
  port="${pair##*:}"
  if [ "$name" != "$own" ]; then
    socat "TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr" "TCP:${name}:${port}" &
  fi
done

exec "$@"
