# The two commands of the README's quick start, on a fresh Debian machine (as root for `test`):
#   make demo   install hpcbridge alone into .venv and run `hpcbridge demo` on a local cluster
#   make test   install the system packages the tests need (Slurm, Open MPI, Octave, Docker) and the tests' and
#               examples' extras, then run every test
#   make bench  every benchmark beside its baseline, one table of ratios (not part of the tests)
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/python -m pip
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check --editable

.PHONY: demo test bench install venv system-packages

demo: venv
	$(PIP_INSTALL) .
	$(VENV)/bin/hpcbridge demo

test: system-packages install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python benchmarks/compare.py

install: venv
	$(PIP_INSTALL) '.[test,examples]'

venv:
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)

system-packages:
	tests/cluster/slurm-cluster install
	tests/cluster/pbs-cluster install
	# OpenLava from the vendored source: ~90 s to build once, 0.3 s when /opt/openlava holds it
	tests/cluster/openlava-cluster install
	# Grid Engine: Debian's packages unpacked into a cache (never installed: they conflict with slurm-wlm-torque)
	tests/cluster/sge-cluster install
	command -v octave-cli >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends octave; }
	# A real browser for the dashboard's test (tests/test_dashboard_browser.py)
	command -v chromium-headless-shell >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-headless-shell; }
	# Docker, docker-compose, debootstrap and slirp4netns for the compose cluster's test, which starts a
	# dockerd of its own in namespaces of its own: a policy-rc.d keeps the install from starting the
	# machine's dockerd, whose iptables rules would cut the Slurm harness's bridges
	command -v dockerd >/dev/null && command -v docker-compose >/dev/null && command -v debootstrap >/dev/null && \
	command -v slirp4netns >/dev/null || { apt-get update -qq && \
		{ test -e /usr/sbin/policy-rc.d || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && \
		chmod +x /usr/sbin/policy-rc.d && touch /tmp/hpcbridge-policy-rc.d; }; } && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io docker-compose \
		debootstrap slirp4netns; status=$$?; \
		test ! -e /tmp/hpcbridge-policy-rc.d || rm -f /usr/sbin/policy-rc.d /tmp/hpcbridge-policy-rc.d; exit $$status; }
