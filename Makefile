# Every target is a thin call of the `agq` CLI. `make` runs the whole pipeline on the default config;
# `make test` runs the tests. Both create .venv from nothing.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
AGQ     := $(VENV)/bin/agq
CONFIG  ?= configs/mnist_plain_ag.yaml
NAME    := $(basename $(notdir $(CONFIG)))
BOARD   ?= Pynq-Z2
IMAGES  ?= 100
RUN_DIR := runs/$(NAME)
OUT_DIR := build/$(NAME)
PIP     := $(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt
STAMP   := $(VENV)/.agq-installed

.PHONY: all setup train export build bitstream finn-deps rtlsim test bench lint clean

all: setup train export build rtlsim

# torch first, pinned to the CPU build by the constraints file: any other way of asking for torch can
# pull a CUDA build. finn-plus without its dependencies: it pins brevitas==0.13.0 (broken on torch
# 2.13); its other requirements are listed in requirements/base.txt.
$(STAMP): pyproject.toml requirements/base.txt requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check --no-deps finn-plus==1.6.1
	$(PIP) -r requirements/base.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m agq.envcheck
	touch $@

setup: $(STAMP)

train: setup
	$(AGQ) train --config $(CONFIG)

export: setup
	$(AGQ) export --checkpoint $(RUN_DIR)/checkpoint.pt --out $(OUT_DIR)

# The default pipeline treats a missing Vivado as the planned end of the build (exit 0).
build: setup
	$(AGQ) build --model $(OUT_DIR)/model.onnx --board $(BOARD) --allow-missing-vivado

# The user's bitstream command: without Vivado it stops with a distinct non-zero exit code.
# (docker/run.sh runs it in the image's own virtual environment: VENV=/opt/agq/.venv.)
bitstream: setup
	$(AGQ) build --model $(OUT_DIR)/model.onnx --board $(BOARD)

# FINN's dependencies (finn-hlslib, nlohmann/json, board files) into $FINN_DEPS, as `finn deps update`.
finn-deps: setup
	$(AGQ) deps

rtlsim: setup
	$(AGQ) rtlsim --build $(OUT_DIR)/$(BOARD) --images $(IMAGES)

test: setup
	$(VENV)/bin/pytest -q tests

bench: setup
	$(AGQ) bench

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf build runs
