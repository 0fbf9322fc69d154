#!/bin/sh
# Creates the application's own database beside Temporal's (run once by the postgres image).
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE USER escalations WITH PASSWORD '${ESCALATIONS_PASSWORD}';
CREATE DATABASE escalations OWNER escalations;
SQL
