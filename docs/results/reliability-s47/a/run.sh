#!/bin/sh
# The forty-seventh session's first review (the simulated replica and the proxy against a real vLLM 0.32):
# each script prints DEFECT: or OK: lines. Usage: SAGA_TREE=<a compiled checkout> sh run.sh
# (d11 starts a real vLLM itself: .venv-vllm and .cache/tiny-llama in the checkout; left out here)
cd "$(dirname "$0")"
for s in d0*.py d10_*.py; do echo "## $s"; python3 "$s" 2>&1 | grep -E '^(DEFECT|OK|INCONCLUSIVE)'; done
