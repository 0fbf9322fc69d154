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
            webhook_secret; do
  if [ ! -s "secrets/$name" ]; then
    random > "secrets/$name"
    echo "secrets/$name: generated"
  fi
  chmod 644 "secrets/$name"
done
# The API holds digests only (ESCALATION_API_TOKENS: name:scopes:sha256); the admin token itself
# goes to secrets/api_admin_token for you to hand to a client, and is mounted nowhere.
if [ ! -s secrets/api_tokens ]; then
  random > secrets/api_admin_token
  printf 'ops-admin:admin:%s\n' "$(tr -d '\n' < secrets/api_admin_token | sha256sum | cut -d' ' -f1)" > secrets/api_tokens
  echo "secrets/api_tokens: generated (admin token ops-admin in secrets/api_admin_token)"
fi
chmod 644 secrets/api_tokens
# The payload key (docs/security.md): `id:base64` of 32 random bytes; add newer keys first to rotate.
if [ ! -s secrets/encryption_keys ]; then
  printf 'k%s:%s\n' "$(date -u +%Y%m%d)" "$(head -c 32 /dev/urandom | base64 | tr -d '\n')" > secrets/encryption_keys
  echo "secrets/encryption_keys: generated"
fi
chmod 644 secrets/encryption_keys
