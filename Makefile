# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   runs the whole loop on a local broker and Redis
#   make test   lint, type-check and every test (what CI runs)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint tools clean

# setup.py generates the gRPC stubs from protos/ during the install.
$(STAMP): pyproject.toml setup.py $(shell find protos -name '*.proto')
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/riverrun demo --report demo-report.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The tests check the Prometheus and Alertmanager files with promtool and amtool and run a
# real Prometheus: Debian's packages, installed here when missing.
tools:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null \
	    || ! command -v amtool >/dev/null; then \
	  if command -v apt-get >/dev/null \
	      && { [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; }; then \
	    sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get \
	      install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; \
	  else \
	    echo "promtool, prometheus or amtool missing, and no apt-get (as root or with" \
	      "sudo) to install them: install Prometheus" \
	      "and Alertmanager, or the Prometheus tests fail" >&2; \
	  fi; \
	fi

# Two pytest workers, each with its own broker and Redis: most tests wait on servers and
# flows, so two run in about half the time of one on two cores (TEST_WORKERS=0: one process).
TEST_WORKERS ?= 2

test: lint tools
	$(BIN)/pytest -n $(TEST_WORKERS)

bench: $(STAMP)
	$(BIN)/riverrun bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info grpc_api/_generated
