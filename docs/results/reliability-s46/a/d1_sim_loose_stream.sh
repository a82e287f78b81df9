#!/bin/bash
# docs/deploy.md:29 says `saga sim` has "the same HTTP API ... as vLLM"; README.md:238-239 says bodies are read
# "as loosely as vLLM reads them ("stream": "true" or 1)". The proxy forwards such a body as a stream
# (t_forwarded_body.py), but the simulated replica -- the demo stack's and `saga serve --simulate`'s backend --
# refuses it with a 400, where vLLM's pydantic model (lax mode) takes "true" and 1 as true.
cd "${SAGA_TREE:-/tmp/snap46}"
timeout 30 python3 -m proxy sim --replicas 1 --base-port 27250 > /dev/null 2>&1 & S=$!
for i in $(seq 30); do curl -s -o /dev/null http://127.0.0.1:27250/health && break; sleep 0.3; done
for v in '"true"' '1'; do
  st=$(curl -s -o /tmp/d1.body -w '%{http_code}' http://127.0.0.1:27250/v1/chat/completions -H 'content-type: application/json' \
    -d "{\"model\":\"saga-sim\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2,\"stream\":$v}")
  if [ "$st" = 200 ]; then echo "OK: saga sim takes \"stream\": $v as vLLM does ($st)"; else echo "DEFECT: saga sim refuses \"stream\": $v with $st ($(head -c 110 /tmp/d1.body)); vLLM (and the proxy) read it as true"; fi
done
kill $S; wait 2>/dev/null
