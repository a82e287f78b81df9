#!/bin/sh
# One-shot traffic in front of one simulated replica of 600 (9,600 tokens) or 4,000 blocks (64,000 tokens),
# default policy (`saga`). Usage: SAGA_TREE=<compiled checkout> sh run.sh
# Ports 18100 (replica) and 18200 (proxy).
here=$(cd "$(dirname "$0")" && pwd)
cd "${SAGA_TREE:?compiled checkout}" || exit 1
for blocks in 600 4000; do
    timeout 400 python3 -m proxy sim --base-port 18100 --profile llama3-8b-h100 --num-gpu-blocks-override $blocks --model saga-sim >/dev/null 2>&1 &
    sim=$!
    sleep 4
    timeout 400 python3 -m proxy serve --replica http://127.0.0.1:18100 --port 18200 >/dev/null 2>&1 &
    proxy=$!
    sleep 6
    echo "## $blocks blocks"
    if [ $blocks = 600 ]; then timeout 300 python3 "$here/sequential_one_shots.py" 18200 40;
    else timeout 300 python3 "$here/fixed_prompt_load.py" 18200 16 30 same; fi
    kill $proxy $sim; wait 2>/dev/null
done
