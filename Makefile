# Every target does its own set-up, once: a second call skips what is already installed and built.
#   make study    the whole study on this machine (Dask, WORKERS x THREADS), then where the results are
#   make test     the tests (CI runs exactly this)
#   make demo     the whole pipeline at smoke size on real MNIST, in demo/ (your results untouched)
#   make plots    the plots page (dvc plots show, offline)
#   make lint     ruff (lint and format check) and mypy, as CI and the pre-commit hook run them
#   make clean    scratch: demo/, logs/, checkpoints/, dvc_plots/
#   make lock     refresh requirements.lock (every package, with hashes) from requirements.txt
# A data mirror for offline machines: VAE_DATA_MIRROR=/path/to/datasets make study
SHELL := /bin/bash
PYTHON ?= python3
WORKERS ?= 2
THREADS ?= 1
VENV := .venv
BIN := $(VENV)/bin
TEMPLATE := .dvc/plots/offline.html
# DVC runs each stage's `python`: the venv's, without activating it.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: study test demo plots lint clean setup

setup: $(VENV)/.installed $(TEMPLATE)

# requirements.lock: every package (pip included) at the version that trained the committed runs, with hashes.
$(VENV)/.installed: requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	touch $@

# The one command that refreshes requirements.lock from requirements.txt: pins already in the lock stay,
# a new or changed requirement is resolved (`--upgrade` moves everything to the newest).
.PHONY: lock
lock: $(VENV)/.installed
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links --no-emit-trusted-host --output-file requirements.lock requirements.txt

# The plots page's template inlines vega from the npm packages pinned in tools/package-lock.json.
$(TEMPLATE): $(VENV)/.installed tools/package-lock.json tools/build_plots_template.py
	npm ci --prefix tools --no-audit --no-fund --silent
	$(BIN)/python tools/build_plots_template.py

study: setup
	$(BIN)/python tools/study.py --workers $(WORKERS) --threads $(THREADS)
	@echo
	@echo "The comparison table:  metrics/comparison.md"
	@echo "The plots page:        make plots   (writes dvc_plots/index.html)"
	@echo "TensorBoard:           $(BIN)/tensorboard --logdir logs"

# Chromium renders the plots page in one test; without apt-get that test is skipped, and says how.
test: setup
	@if ! command -v chromium >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make test: no Chromium; the plots page's browser test is skipped (install: apt-get install chromium)"; fi; \
	fi
	$(BIN)/python -m pytest

# Smoke size (1 epoch on 2000 images, one seed, the tuned recipe) in a clone of this commit.
demo: setup
	# Without the project's remote (dvc-remote/, the committed study's objects): the demo's runs go
	# to demo/dvc-remote, a scratch folder of its own.
	rm -rf demo && git clone -q --no-checkout . demo
	cd demo && git sparse-checkout set --no-cone '/*' '!/dvc-remote/' && git checkout -q
	cp $(TEMPLATE) demo/$(TEMPLATE)
	rm -rf demo/plots demo/metrics/cells  # the committed study's pictures and cells: not the demo's
	cd demo && ../$(BIN)/python -c "from tests.smoke import set_params; from pathlib import Path; \
	  set_params(Path('.'), {'train.epochs': 1, 'data.train_subset': 2000, 'seeds': [0], 'recipes': ['tuned'], \
	  'eval.iw_samples': 20, 'eval.literature_iw_samples': 10, 'eval.iw_images': 200})"
	cd demo && ../$(BIN)/python tools/study.py --workers $(WORKERS) --threads $(THREADS)
	@echo
	@echo "The demo's table:      demo/metrics/comparison.md"
	@echo "Its pictures:          demo/plots/CELL/*.png"

plots: setup
	$(BIN)/dvc plots show
	@echo "The plots page: dvc_plots/index.html"

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf demo logs checkpoints dvc_plots
