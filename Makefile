# leadscore — `make help` lists the targets. `make demo` and `make test` each bootstrap .venv.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.installed-spark
CHROMIUM_STAMP := $(VENV)/.installed-chromium
CONFIG ?= configs/bank_marketing.yaml
INPUT ?= data/raw/bank_marketing/bank-additional-full.csv
OUTPUT ?= data/scored/bank_marketing.parquet
# a registered model's name (its @champion), a models:/ URI or a bundle folder
MODEL ?= lead-bank-marketing
HOST ?= 127.0.0.1
# empty: `serve` and `mlflow-serve` take 8000, `mlflow-ui` 5000 (`make mlflow-ui PORT=5001`)
PORT ?=
PYTEST_ARGS ?=

export PYTHONDONTWRITEBYTECODE := 1

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# PySpark (~0.5 GB) and Java only for the Spark tests: `make test` and CI, never `make demo`
$(SPARK_STAMP): $(STAMP)
	@command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $(SPARK_STAMP)

# Debian's Chromium and Playwright for the pages' browser tests (tests/pages/), gcc and the
# [fast] extra for the compiled trees' tests: `make test` and CI only (not `make demo`: together
# about 0.3 GB a demo never uses)
$(CHROMIUM_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,fast,browser]'
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@# the compiled-trees tests (tests/test_compiled.py, the [fast] extra) build C with gcc
	@command -v gcc >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc; }
	@touch $(CHROMIUM_STAMP)

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: install
install: $(STAMP) ## Create .venv and install leadscore with its dev tools (no PySpark)

.PHONY: demo
demo: $(STAMP) ## Train on bank marketing, register @champion, batch-score, print a summary
	$(BIN)/python -m leadscore.demo

.PHONY: train
train: $(STAMP) ## Train on CONFIG (default configs/bank_marketing.yaml) and register the model
	$(BIN)/leadscore train --config $(CONFIG)

.PHONY: score
score: $(STAMP) ## Batch-score INPUT into OUTPUT with MODEL (a name: its @champion)
	$(BIN)/leadscore score --model $(MODEL) --input $(INPUT) --output $(OUTPUT) --reasons 3

.PHONY: serve
serve: $(STAMP) ## Serve every model with a @champion on HOST:PORT (default 127.0.0.1:8000)
	$(BIN)/leadscore serve --host $(HOST) --port $(or $(PORT),8000)

.PHONY: test
test: $(SPARK_STAMP) $(CHROMIUM_STAMP) ## Run the test suite (adds PySpark and Java, and Chromium for the pages)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check src serve tests benchmarks
	$(BIN)/mypy src serve

.PHONY: mlflow-ui
mlflow-ui: $(STAMP) ## Open the MLflow UI on the embedded store (127.0.0.1:PORT, default 5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db \
	  --host $(HOST) --port $(or $(PORT),5000)

.PHONY: mlflow-serve
mlflow-serve: $(STAMP) ## Serve MODEL@champion with MLflow's own server (HOST:PORT, default 8000)
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI=sqlite:///mlflow.db \
	  $(BIN)/mlflow models serve -m models:/$(MODEL)@champion --env-manager local \
	  --host $(HOST) --port $(or $(PORT),8000)

.PHONY: clean
clean: ## Remove build outputs (models, MLflow store, scores, caches); keeps .venv and data/raw
	find models -mindepth 1 -maxdepth 1 -not -name README.md -exec rm -rf {} +
	rm -rf mlflow.db mlartifacts mlruns data/scored data/synthetic data/interim reports cache scores \
	  .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
