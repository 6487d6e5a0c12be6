# genzoo: every target installs what it needs first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# optional extras (pyproject.toml), e.g. EXTRAS=vision for torchvision; the torch installed is kept
EXTRAS ?=
comma := ,
STAMP := $(VENV)/.genzoo-installed$(if $(EXTRAS),-$(subst $(comma),-,$(EXTRAS)))
# The torch build to install. Default: the CPU build this project is tested with (pip takes a
# local wheel where one exists). GPU users: see README, "GPU install".
TORCH_SPEC ?= torch==2.13.0
PROFILE ?=
ARGS ?=
TEST_WORKERS ?= auto
MLFLOW_PORT ?= 5000
MLFLOW_WORKERS ?= 2
PREFECT_PORT ?= 4200
MLFLOW_STORE ?= $(CURDIR)

.PHONY: install browser run test repro bench mlflow serve status lint clean
install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard */__init__.py)
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	@# torch pinned to the build installed: an extra's dependency (torchvision) gets the release
	@# made for it, not the newest torch (CUDA wheels and all) in its place
	@$(PY) -m pip install -q -e ".[dev$(if $(EXTRAS),$(comma)$(EXTRAS))]" \
	  "torch==$$($(PY) -W ignore -c 'import torch; print(torch.__version__)')"
	@# PyPI's torchvision is built for PyPI's torch: beside a +cpu torch it installs, then fails to load
	@if [[ ",$(EXTRAS)," == *,vision,* ]] && ! $(PY) -W ignore -c "import torchvision" >/dev/null 2>&1; then \
	  echo "make install: torchvision was installed but does not load beside torch $$($(PY) -W ignore -c \
	  'import torch; print(torch.__version__)') (built for another torch); README, \"GPU install\", says which one to install"; \
	  exit 1; fi
	@touch $(STAMP)

run: install  ## the pipeline (Prefect flow, Ray fan-out) on the embedded digits (PROFILE=quick: a few minutes on 2 cores)
	$(VENV)/bin/genzoo run $(if $(PROFILE),--profile $(PROFILE)) $(ARGS)

serve: install  ## Prefect server + UI on 127.0.0.1:$(PREFECT_PORT), serving the genzoo deployments
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/genzoo serve --port $(PREFECT_PORT) $(ARGS)

status: install  ## what is trained, current or stale, and where its MLflow run is
	$(VENV)/bin/genzoo status $(ARGS)

# The report test opens the HTML report in headless Chromium (driven by Playwright's Python
# package; the browser is Debian's, so nothing is downloaded from a browser CDN).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$GENZOO_CHROMIUM" ] || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	  { echo "make test needs Chromium: sudo apt-get install chromium (or set GENZOO_CHROMIUM)"; exit 1; }

test: install browser  ## the whole suite that needs no GPU, on every core (TEST_WORKERS=0: one process)
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25 $(ARGS)

repro: install  ## the DVC pipeline (dvc.yaml); a second call does nothing
	source $(VENV)/bin/activate && dvc repro $(ARGS)

bench: install  ## per-family training time, sampling speed, test bits/dim
	$(PY) bench/families.py $(ARGS)

mlflow: install  ## MLflow UI + API on 127.0.0.1:$(MLFLOW_PORT) over the project's tracking store
	@# a port in use: mlflow's server would log the error and still exit 0
	@$(PY) -c "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
	  s.bind(('127.0.0.1', $(MLFLOW_PORT)))" 2>/dev/null || { echo "make mlflow: port $(MLFLOW_PORT) on" \
	  "127.0.0.1 is in use (an MLflow server already? http://127.0.0.1:$(MLFLOW_PORT)); another port:" \
	  "make mlflow MLFLOW_PORT=N" >&2; exit 1; }
	@# no GenAI job runner (MLflow 3's scorers and prompt jobs, which genzoo has none of: six more processes)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
	$(VENV)/bin/mlflow server --backend-store-uri sqlite:///$(MLFLOW_STORE)/mlflow.db \
	  --artifacts-destination $(MLFLOW_STORE)/mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT) \
	  --workers $(MLFLOW_WORKERS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs checkpoints data/prepared samples
