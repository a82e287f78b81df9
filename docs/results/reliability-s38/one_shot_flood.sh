#!/bin/bash
# One-shot calls that each name a fresh X-Session-ID, against one fake replica reporting 100,000 KV blocks
# (1.6M tokens): the next new session's wait after a first burst (cold) and after a second burst once the
# first burst's holds ran out. From the repository root:
#   python docs/results/reliability-s38/fake_replica.py 19402 &
#   docs/results/reliability-s38/one_shot_flood.sh
# Needs wrk. Output of the thirty-eighth session's run: one_shot_flood.txt beside this file.
HERE=$(dirname "$0")
python -m proxy.cli serve --replica http://127.0.0.1:19402 --port 19412 --no-access-log > /tmp/one-shot-proxy.log 2>&1 &
PID=$!
sleep 5
state() { curl -s localhost:19412/saga/v1/state | python -c "import json,sys; d=json.load(sys.stdin); print(d['sessions'], d['queued'], d['admission'])"; }
one() { /usr/bin/time -f "new session call: %e s" curl -s -o /dev/null -w "%{http_code} " -H "X-Session-ID: $1" -H "Content-Type: application/json" -d '{"model":"m","messages":[{"role":"user","content":"hello"}]}' localhost:19412/v1/chat/completions; }
echo "== flood 1 (5 s) $(date +%T)"; PFX=a wrk -t1 -c16 -d5s -s "$HERE/sessions.lua" http://127.0.0.1:19412/ | grep -E "Requests/sec|requests in"
state; one new1; state
echo "== wait 10 s $(date +%T)"; sleep 10; state
echo "== flood 2 (5 s) $(date +%T)"; PFX=b wrk -t1 -c16 -d5s -s "$HERE/sessions.lua" http://127.0.0.1:19412/ | grep -E "Requests/sec|requests in"
state; one new2; state
kill $PID
