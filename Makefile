# Everything installs into .venv from nothing; every target that needs it depends on the install stamp.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Each service room that has been built is its own distribution in the `tubelens` namespace.
ROOMS  := $(dir $(wildcard services/*/pyproject.toml))
PROTO_OUT := shared

.PHONY: install models protos check-protos lint test bench up down status demo clean

install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard services/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[stack,dev]' $(addprefix -e ,$(ROOMS))
	bash scripts/ensure-java.sh
	$(BIN)/python -m tubelens.embedding.export
	@touch $(STAMP)

# The embedding backbone exported to ONNX (checked against torch); part of the install.
models: $(STAMP)
	$(BIN)/python -m tubelens.embedding.export

# Generated code lives beside the shared library and is never edited by hand.
protos: $(STAMP)
	$(BIN)/python scripts/protogen.py $(PROTO_OUT)

# Fails when the committed stubs differ from what the protos generate.
check-protos: $(STAMP)
	$(BIN)/python scripts/protogen.py --check $(PROTO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check shared services tests

test: $(STAMP) check-protos
	$(BIN)/pytest tests

bench: $(STAMP)
	$(BIN)/python -m tests.bench

up: $(STAMP)
	$(BIN)/tubelens stack up

down: $(STAMP)
	$(BIN)/tubelens stack down

status: $(STAMP)
	$(BIN)/tubelens stack status

demo: $(STAMP)
	$(BIN)/tubelens demo

clean:
	rm -rf $(VENV) .tubelens .pytest_cache
