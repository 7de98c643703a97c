# ddm — two commands do everything on a fresh machine:
#   make run    virtual environment → install (the package, the S&P 500 data) → train examples/hedge.ddm
#   make test   the same set-up plus the test extra (pytest, cvxpy, ruff, pyright, …) → the suite
# Both may install graphviz with apt-get (the `dot` target says so first; SKIP_DOT=1 skips it).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST := $(PY) -m pytest -p no:cacheprovider --import-mode=importlib
# The suite runs in this many processes (pytest-xdist), a test file to a process: XLA compiles a
# program on one core, so two processes keep a 2-core machine busy. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
WORKERS := -n $(TEST_WORKERS) --dist loadfile
# Stamps: each install is redone whenever the project's metadata or pins change.
STAMP      := $(VENV)/.ddm-installed
TEST_STAMP := $(VENV)/.ddm-test-installed
DATA_STAMP := $(VENV)/.ddm-data-installed

.PHONY: run test check test-slow bench gpu-check deep-hedge-grid phi-vs-dp install install-test data dot lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# skfolio, installed without its dependencies (`data`), would have pip report them as missing
# ("dependency conflicts") during any later install: each install takes it out, `data` puts it back.
define without_data
	@if [ -f $(DATA_STAMP) ]; then $(PIP) uninstall --quiet --yes skfolio; rm -f $(DATA_STAMP); fi
endef

# The package (editable) and what it needs to run, nothing more.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(without_data)
	@# this checkout, installed under its former distribution name (ddm, now ddmc), is replaced
	@if $(PIP) show ddm 2>/dev/null | grep -qxF "Editable project location: $(CURDIR)"; then \
	  $(PIP) uninstall --quiet --yes ddm; fi
	$(PIP) install --quiet -c constraints.txt -e .
	@# the repository root is the package `ddm`: pyright finds it through this link (it cannot
	@# follow the editable install's import hook; pyproject.toml [tool.pyright] extraPaths)
	@mkdir -p $(VENV)/src && ln -sfn "$(CURDIR)" $(VENV)/src/ddm
	@touch $@

# The suite's peers, oracle, lint and type checker on top.
$(TEST_STAMP): $(STAMP)
	$(without_data)
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	@touch $@

# S&P 500 prices (sp500_windows, examples/hedge.ddm) ship in the skfolio wheel; ddm reads its data
# file only (no import), so it is installed without its heavy dependencies (pandas, scikit-learn,
# cvxpy, plotly), after the other installs. By hand: pip install --no-deps skfolio==1.12.2.
$(DATA_STAMP): $(STAMP)
	$(PIP) install --quiet --no-deps -c constraints.txt skfolio
	@touch $@

install: $(STAMP)
install-test: $(TEST_STAMP)
data: $(DATA_STAMP)

# graphviz's `dot` binary renders diagrams as SVG/PNG (without it, ddmc writes DOT text only).
# Installed system-wide with apt-get when absent and possible, saying so first; SKIP_DOT=1 skips.
dot:
ifeq ($(SKIP_DOT),)
	@command -v dot >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing graphviz (the 'dot' binary) with apt-get… (a system package, for SVG/PNG" \
	         "diagrams only; to skip it: make $(MAKECMDGOALS) SKIP_DOT=1)"; \
	    (apt-get install -y -qq graphviz >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq graphviz >/dev/null 2>&1)) \
	    || echo "note: could not install graphviz: ddmc writes diagrams as DOT text only; for" \
	            "SVG/PNG install graphviz yourself"; \
	  else echo "note: graphviz's 'dot' not found: ddmc writes diagrams as DOT text only; for" \
	            "SVG/PNG install graphviz (apt-get install graphviz, brew install graphviz, …)"; fi; }
endif

run: install data dot
	$(VENV)/bin/ddmc compile examples/hedge.ddm --run

# lint (ruff), formatting (ruff format), types (pyright), then the suite
check: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# --project: pyright would otherwise prefer a pyrightconfig.json found in a parent folder
	$(VENV)/bin/pyright --project pyproject.toml

test: install-test data dot check
	$(PYTEST) -m "not slow" -q --durations=30 $(WORKERS)

test-slow: install-test data dot
	$(PYTEST) -m slow -q --durations=30 $(WORKERS) || [ $$? -eq 5 ]  # exit 5: no test is marked slow

BENCH_STAMP := $(VENV)/.ddm-bench-installed
$(BENCH_STAMP): $(TEST_STAMP)
	$(without_data)
	$(PIP) install --quiet -c constraints.txt -e '.[test,bench]'
	$(PIP) install --quiet --no-deps -c constraints.txt pfhedge
	@touch $(BENCH_STAMP)

bench: install-test $(BENCH_STAMP) data
	$(PY) -m ddm.bench

# everything ddm should show on a GPU, in one command (bench/gpu_check.py; says so without one)
gpu-check: install-test
	$(PY) -m ddm.bench.gpu_check

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
