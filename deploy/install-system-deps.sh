#!/usr/bin/env bash
# Installs what the project needs from Debian's packages when it is missing:
# Java 17 and Maven (to resolve and run Apache Kafka), kcat (a third-party Kafka client for checks).
# PostgreSQL is installed on demand by shared/pg_local.py. Idempotent and quiet when all is there.
set -euo pipefail
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "relief: please install: ${missing[*]}" >&2
    exit 1
  fi
  echo "relief: installing ${missing[*]} from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
