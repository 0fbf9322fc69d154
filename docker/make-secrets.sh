#!/bin/sh
# Generates the compose stack's secrets once, into ./secrets (docker-compose.yml, `secrets:`).
# Existing files are kept. The folder is 700; the files are 644 inside it because compose
# mounts them as they are and the services run as their own users (postgres, grafana, 10001).
set -eu
cd "$(dirname "$0")/.."
umask 077
mkdir -p secrets
chmod 700 secrets
random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
for name in postgres_password escalations_db_password grafana_db_password grafana_admin_password \
            webhook_secret api_tokens; do
  if [ ! -s "secrets/$name" ]; then
    random > "secrets/$name"
    echo "secrets/$name: generated"
  fi
  chmod 644 "secrets/$name"
done
