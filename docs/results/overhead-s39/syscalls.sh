# Syscalls per proxied call (thirty-ninth session, 2026-12-06 ~02:20 UTC, main at 2d83a79): nginx (a fixed JSON
# answer, then a fixed SSE stream) behind `saga serve` (one process, defaults), wrk -c32 for 3 s while
# `strace -c -f` counts the proxy's syscalls. Output: strace-json.txt and
# strace-sse.txt, wrk's lines in wrk.txt. `bash docs/results/overhead-s39/syscalls.sh`.
set -e
cd "$(dirname "$0")/../../.."
OUT=docs/results/overhead-s39
export W=${W:-/tmp/saga-syscalls}; mkdir -p "$W"; : > "$OUT/wrk.txt"
python3 - <<'PY'
from pathlib import Path
from loadtests.bench.overhead import _nginx_conf, CHAT_JSON, CHAT_SSE, wrk_script, REQUEST
import msgspec
import os; w=Path(os.environ.get("W", "/tmp/saga-syscalls"))
_nginx_conf(w, 18801, CHAT_JSON, "application/json")
_nginx_conf(w, 18802, CHAT_SSE, "text/event-stream")
for stream in (False, True):
    req = msgspec.json.encode({**REQUEST, "stream": stream}).decode()
    (w/f"wrk-{int(stream)}.lua").write_text(wrk_script(req, 32, None, "none"))
PY
nginx -c $W/nginx-18801.conf -p $W -g "daemon off;" & N1=$!
nginx -c $W/nginx-18802.conf -p $W -g "daemon off;" & N2=$!
sleep 0.5
for m in 0 1; do
  B=$((18801+m))
  python3 -m proxy.cli serve --replica http://127.0.0.1:$B --port 18810 2>/dev/null & P=$!
  sleep 4
  wrk -t1 -c32 -d2 -s $W/wrk-$m.lua http://127.0.0.1:18810/v1/chat/completions >/dev/null
  timeout 4 strace -c -f -p $P -o $OUT/strace-$([ $m = 0 ] && echo json || echo sse).txt & S=$!
  sleep 0.5
  wrk -t1 -c32 -d3 -s $W/wrk-$m.lua http://127.0.0.1:18810/v1/chat/completions | grep -E "requests in|Requests/sec" | sed "s/^/mode $m (0 json, 1 sse): /" >> "$OUT/wrk.txt"
  wait $S || true
  kill $P; wait $P || true
done
kill $N1 $N2
