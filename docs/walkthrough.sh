#!/usr/bin/env bash
# Walk-through of the blog's Salesforce-sync escalation over the HTTP API:
# start -> acknowledge -> customer-visible note -> resolve -> postmortem -> CSAT.
# Needs API (e.g. http://127.0.0.1:8000) and TOKEN (a token with the start, act and csat
# scopes: stack.json's api_token). TICKET defaults to a new SF-API-<time> on every run, so
# the quickstart's SF-1042 is left alone. A step that gets no 2xx prints its answer (the
# problem document) and stops the script with exit 1. Uses only curl and python3.
set -euo pipefail
: "${API:?set API, e.g. http://127.0.0.1:8000}" "${TOKEN:?set TOKEN to an API token}"
TICKET="${TICKET:-SF-API-$(date -u +%Y%m%d-%H%M%S)}"

# call STEP METHOD PATH [JSON]: prints "STEP: HTTP <code>" and keeps the body in $BODY;
# on anything but 2xx prints the body and exits 1 (curl -f would swallow the body)
call() {
  local out code
  out=$(curl -sS -X "$2" "$API$3" -H "Authorization: Bearer $TOKEN" \
        -H "Content-Type: application/json" ${4:+--data "$4"} -w '\n%{http_code}') ||
    { echo "$1 failed: no answer from $API" >&2; exit 1; }
  BODY=${out%$'\n'*}
  code=${out##*$'\n'}
  echo "$1: HTTP $code"
  if [[ $code != 2?? ]]; then
    echo "$1 failed: $2 $3 answered HTTP $code:" >&2
    echo "$BODY" >&2
    exit 1
  fi
}
# field NAME: a top-level field of the last response
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$BODY" "$1"; }

call start POST /escalations '{
  "ticket_id": "'"$TICKET"'",
  "title": "Salesforce sync failing since yesterday",
  "customer": {"id": "acme", "name": "Acme Corp", "segment": "enterprise"},
  "category": "integration", "kind": "priority", "priority": "P1",
  "impact": {"users_affected": 250, "critical": true,
             "description": "Board meeting tomorrow depends on synced data"},
  "handoff": {"ticket_history": "Head of Operations: data stopped syncing yesterday.",
              "error_logs": "SyncError: INVALID_FIELD AccountRegion__c",
              "integration_id": "sf-prod-7",
              "steps_to_reproduce": "Run a manual sync from Settings > Integrations > Salesforce"}
}'
echo "  workflow $(field workflow_id), run $(field run_id)"

call acknowledge POST "/escalations/$TICKET/acknowledge" '{"by": "dana"}'
echo "  status $(field status), level $(field level)"

call note POST "/escalations/$TICKET/notes" '{"author": "dana", "customer_visible": true,
  "text": "Found it: a renamed Salesforce field. A fix is on its way."}'

call resolve POST "/escalations/$TICKET/resolve" '{"by": "dana",
  "root_cause": "Salesforce API schema change renamed AccountRegion__c",
  "mitigation": "Mapped the new field name and re-ran the sync",
  "preventive_actions": ["Monitor Salesforce schema changes"]}'
echo "  status $(field status)"

call postmortem POST "/escalations/$TICKET/postmortem" '{"by": "dana",
  "summary": "Sync broke after an upstream schema change",
  "root_cause": "Unmonitored Salesforce schema change",
  "improvements": ["Alert on Salesforce schema changes"],
  "kb_article_url": "https://kb.example.com/salesforce-sync"}'
echo "  status $(field status)"

call csat POST "/escalations/$TICKET/csat" '{"score": 5, "comment": "Fixed before the board meeting"}'

call state GET "/escalations/$TICKET"
echo "  status $(field status), notifications sent $(field notifications_sent)"
