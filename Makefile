# leadscore — `make help` lists the targets. `make demo` and `make test` each bootstrap .venv.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/bank_marketing.yaml
INPUT ?= data/raw/bank_marketing/bank-additional-full.csv
OUTPUT ?= data/scored/bank_marketing.parquet
MODEL ?= models:/lead-conversion@champion
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

export PYTHONDONTWRITEBYTECODE := 1

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $(STAMP)

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: install
install: $(STAMP) ## Create .venv and install leadscore with its dev tools

.PHONY: demo
demo: $(STAMP) ## Train on bank marketing, register @champion, batch-score, print a summary
	$(BIN)/python -m leadscore.demo

.PHONY: train
train: $(STAMP) ## Train on CONFIG (default configs/bank_marketing.yaml) and register the model
	$(BIN)/leadscore train --config $(CONFIG)

.PHONY: score
score: $(STAMP) ## Batch-score INPUT into OUTPUT with MODEL (default @champion)
	$(BIN)/leadscore score --model $(MODEL) --input $(INPUT) --output $(OUTPUT) --reasons 3

.PHONY: serve
serve: $(STAMP) ## Serve the @champion model on HOST:PORT (default 127.0.0.1:8000)
	$(BIN)/leadscore serve --host $(HOST) --port $(PORT)

.PHONY: test
test: $(STAMP) ## Run the test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check src serve tests benchmarks
	$(BIN)/mypy src serve

.PHONY: mlflow-ui
mlflow-ui: $(STAMP) ## Open the MLflow UI on the embedded store (127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

.PHONY: clean
clean: ## Remove build outputs (models, MLflow store, scores, caches); keeps .venv and data/raw
	rm -rf models/lead-conversion mlflow.db mlartifacts mlruns data/scored data/synthetic reports scores \
	  .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
