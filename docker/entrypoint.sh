#!/bin/sh
# Docker secrets: for each of the project's secret variables, VAR_FILE=/run/secrets/name in the
# environment sets VAR to that file's content (the convention of the official images), then
# the command runs. Only these names: other *_FILE variables (SSL_CERT_FILE…) mean a path, and
# ESCALATION_API_TOKENS_FILE is read by the application itself (one entry per line, comments).
set -eu
for name in $(env | sed -n 's/^\(ESCALATION_[A-Z0-9_]*\)_FILE=.*/\1/p') DATABASE_URL PGPASSWORD TEMPORAL_API_KEY; do
  [ "$name" != ESCALATION_API_TOKENS ] || continue
  eval "file=\${${name}_FILE:-}"
  [ -n "$file" ] || continue
  if [ ! -r "$file" ]; then
    echo "escalations-entrypoint: ${name}_FILE names $file, which cannot be read" >&2
    exit 1
  fi
  value=$(cat "$file")
  export "$name=$value"
  unset "${name}_FILE"
done
exec "$@"
