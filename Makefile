# The two commands of the README. Both do all set-up on a fresh machine.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
NODE_PREFIX := .ci/node

.PHONY: demo test setup-test system-packages azurite

demo:                      ## install batchnb and run a real demo job on the local pool
	$(PIP) install -q -e .
	batchnb demo

test: setup-test           ## install everything the tests need and run the whole suite
	$(PYTHON) -m pytest -q -ra tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; exit $$rc

setup-test: system-packages azurite
	$(PIP) install -q -e ".[dev]"

# Debian's Chromium (widget tests in JupyterLab) and mpich (multi-instance tasks).
system-packages:
	@if ! command -v chromium >/dev/null || ! command -v mpiexec >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium mpich >/dev/null; \
	fi

# Azurite, the Azure Blob emulator, from npm, into .ci/node (not global).
azurite:
	@test -x $(NODE_PREFIX)/node_modules/.bin/azurite-blob || \
	  npm install --silent --no-audit --no-fund --prefix $(NODE_PREFIX) azurite@3
