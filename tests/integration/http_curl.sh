#!/usr/bin/env bash
# Drives `ledger serve` with curl: a client that is not Python. Run by test_http_server.py with
# BASE (the service's URL), KEY (a write key of the master account M), READ_KEY (a read key of
# client C1), CTI (a stamping account holding 5 stamps) and WORK (a scratch folder).
set -euo pipefail
cd "$WORK"
fail() { echo "curl test failed: $*" >&2; exit 1; }
# One request: prints the HTTP status; the body lands in body.json, the headers in headers.txt.
call() { curl -sS -o body.json -D headers.txt -w '%{http_code}' "$@"; }

uuid=$(cat /proc/sys/kernel/random/uuid)
consume="{\"type\":\"ConsumeStamp\",\"cti_id\":\"$CTI\",\"cfdi_uuid\":\"$uuid\",\"issuer_rfc\":\"GODE561231GR8\"}"
auth="Authorization: Bearer $KEY"

status=$(call -X POST "$BASE/v1/commands" -H "$auth" -H 'Content-Type: application/json' --data "$consume")
[ "$status" = 200 ] || fail "consume: $status $(cat body.json)"
grep -q '"balance_after":4' body.json || fail "consume: $(cat body.json)"

status=$(call -X POST "$BASE/v1/commands" -H "$auth" --data "$consume")
[ "$status" = 200 ] || fail "replay: $status"
grep -qi '^idempotency-replayed: true' headers.txt || fail "replay: no Idempotency-Replayed"

status=$(call -X POST "$BASE/v1/commands" --data "$consume")
[ "$status" = 401 ] || fail "no key: $status"
grep -qi '^content-type: application/problem+json' headers.txt || fail "401 is not a problem"

status=$(call -X POST "$BASE/v1/commands" -H "Authorization: Bearer $READ_KEY" --data "$consume")
[ "$status" = 403 ] || fail "read key: $status"

status=$(call -X POST "$BASE/v1/commands" -H "$auth" --data '{"type":"ConsumeStamp","type":"x"}')
[ "$status" = 400 ] || fail "duplicated key: $status"
grep -q 'duplicated key in a JSON object' body.json || fail "duplicated key: $(cat body.json)"

printf '{"type":"ConsumeStamp","issuer_rfc":"\xff"}' > bad-utf8.json
status=$(call -X POST "$BASE/v1/commands" -H "$auth" --data-binary @bad-utf8.json)
[ "$status" = 400 ] || fail "invalid UTF-8: $status"
grep -q 'not UTF-8' body.json || fail "invalid UTF-8: $(cat body.json)"

head -c 1100000 /dev/zero | tr '\0' ' ' > big.json
status=$(call -X POST "$BASE/v1/commands" -H "$auth" --data-binary @big.json)
[ "$status" = 413 ] || fail "1.1 MB body: $status"

[ "$(call "$BASE/v1/nowhere" -H "$auth")" = 404 ] || fail "unknown route"
[ "$(call -X DELETE "$BASE/v1/commands" -H "$auth")" = 405 ] || fail "wrong method"

printf '%s\n%s\n' \
  "{\"type\":\"ConsumeStamp\",\"cti_id\":\"$CTI\",\"cfdi_uuid\":\"$(cat /proc/sys/kernel/random/uuid)\",\"issuer_rfc\":\"GODE561231GR8\"}" \
  '{"type":"Nope"}' > batch.ndjson
status=$(call -X POST "$BASE/v1/commands/batch" -H "$auth" -H 'Content-Type: application/x-ndjson' --data-binary @batch.ndjson)
[ "$status" = 200 ] || fail "batch: $status"
grep -q '"balance_after":3' body.json || fail "batch: $(cat body.json)"
grep -q '"code":"invalid_command"' body.json || fail "batch: $(cat body.json)"

status=$(call "$BASE/v1/balances/$CTI" -H "Authorization: Bearer $READ_KEY")
[ "$status" = 200 ] || fail "balance: $status"
grep -q '"balance":3' body.json || fail "balance: $(cat body.json)"

[ "$(call "$BASE/readyz")" = 200 ] || fail "readyz"
[ "$(call "$BASE/metrics")" = 200 ] || fail "metrics"
grep -q 'ledger_http_requests_total' body.json || fail "metrics: no request counter"

echo "curl: every check passed"
