# ddm — two commands do everything on a fresh machine:
#   make run    virtual environment → install → train examples/hedge.ddm
#   make test   the same set-up (with the test extra) → the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ddm-installed
PYTEST := $(PY) -m pytest -p no:cacheprovider --import-mode=importlib

.PHONY: run test check test-slow bench deep-hedge-grid phi-vs-dp install dot lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The install is redone whenever the project's metadata or pins change.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	@# S&P 500 prices ship in the skfolio wheel; ddm reads its data file only (no import),
	@# so skip its heavy dependencies.
	$(PIP) install --quiet --no-deps -c constraints.txt skfolio
	@# the repository root is the package `ddm`: pyright finds it through this link (it cannot
	@# follow the editable install's import hook; pyproject.toml [tool.pyright] extraPaths)
	@mkdir -p $(VENV)/src && ln -sfn "$(CURDIR)" $(VENV)/src/ddm
	@touch $(STAMP)

install: $(STAMP)

# graphviz's `dot` binary renders diagrams; install it when absent and possible.
dot:
	@command -v dot >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq graphviz >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq graphviz >/dev/null 2>&1)) \
	    || echo "note: could not install graphviz; SVG/PNG rendering will be unavailable"; \
	  else echo "note: 'dot' not found; install graphviz for SVG/PNG diagrams"; fi; }

run: install dot
	$(VENV)/bin/ddmc compile examples/hedge.ddm --run

# lint (ruff), formatting (ruff format), types (pyright), then the suite
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# --project: pyright would otherwise prefer a pyrightconfig.json found in a parent folder
	$(VENV)/bin/pyright --project pyproject.toml

test: install dot check
	$(PYTEST) -m "not slow" -q

test-slow: install dot
	$(PYTEST) -m slow -q || [ $$? -eq 5 ]  # exit 5: no test is marked slow yet

BENCH_STAMP := $(VENV)/.ddm-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PIP) install --quiet -c constraints.txt -e '.[test,bench]'
	$(PIP) install --quiet --no-deps -c constraints.txt pfhedge
	@touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(PY) -m ddm.bench

# the deep-hedging results grid (markets × costs × losses, ~40 min on 2 cores) → docs/results/deep_hedge.md
deep-hedge-grid: install
	$(PY) -m ddm.bench.deep_hedge_grid

phi-vs-dp: install
	$(PY) -m ddm.bench.phi_vs_dp

# Re-resolve the pins from pyproject.toml in a scratch environment.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip && .lock-venv/bin/pip install --quiet '.[test,bench]'
	{ echo "# Versions resolved and tested (pip install -c constraints.txt). Regenerate with 'make lock'."; \
	  .lock-venv/bin/pip freeze | grep -v '^ddm' | sed 's/+cpu$$//'; echo "skfolio==1.12.2"; \
	  echo "pfhedge==0.23.0"; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) runs build *.egg-info
