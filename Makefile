# The two commands of the README: `make demo` (the whole job on an emulated Pi 4) and `make test`.
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test test-fast bench clean-sim

setup:
	scripts/setup.sh

demo: setup
	scripts/demo.sh

test: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider --durations=15

test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow and not boards"

bench: setup
	$(VENV)/bin/pip install -q --disable-pip-version-check -e ".[bench]"
	for b in bench/bench_*.py bench/ncnn_io.py; do $(VENV)/bin/python $$b || exit 1; done

clean-sim:
	-$(VENV)/bin/deployer sim down
