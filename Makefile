# The two commands of the README's quick start, on a fresh Debian machine (as root for `test`):
#   make demo   install hpcbridge into .venv and run `hpcbridge demo` on a local cluster
#   make test   install the system packages the tests need (Slurm, Open MPI, Octave), then run every test
#   make bench  every benchmark beside its baseline, one table of ratios (not part of the tests)
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/python -m pip

.PHONY: demo test bench install system-packages

demo: install
	$(VENV)/bin/hpcbridge demo

test: system-packages install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python benchmarks/compare.py

install:
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --editable '.[test,examples]'

system-packages:
	tests/cluster/slurm-cluster install
	command -v octave-cli >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends octave; }
