# The two commands of the README. Both do all set-up on a fresh machine.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
NODE_PREFIX := .ci/node

.PHONY: demo test setup-test system-packages azurite

demo:                      ## install batchnb and run a real demo job on the local pool
	$(PIP) install -q -e .
	batchnb demo

# Three xdist workers on two cores: most tests wait on real processes, not on the CPU. loadgroup
# keeps the tests of one Slurm cluster, of podman, and of a shared module fixture on one worker
# (tests/conftest.py).
test: setup-test           ## install everything the tests need and run the whole suite
	$(PYTHON) -m pytest -q -ra -n 3 --dist loadgroup tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; exit $$rc

# Last, the Azure tests' clean-VM venv (the pinned dependencies from PyPI, about 3 min), made
# once per set of pins into ~/.cache/batchnb-tests, so the suite's first Azure pool does not wait on it.
setup-test: system-packages azurite
	$(PIP) install -q -e ".[dev]"
	$(PYTHON) tests/azure_standin.py build-vm-venv

# From Debian: Chromium (widget tests in JupyterLab), mpich (multi-instance
# tasks), podman with busybox-static and runc (container tasks, images built
# offline), slurm-wlm and munge (the Slurm backend), prometheus (metrics).
DEBIAN_PACKAGES := chromium mpich podman busybox-static runc slurm-wlm munge prometheus
DEBIAN_COMMANDS := chromium mpiexec podman busybox runc slurmctld munged prometheus
system-packages:
	@missing=; for c in $(DEBIAN_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
	fi

# Azurite, the Azure Blob emulator, from npm, into .ci/node (not global).
azurite:
	@test -x $(NODE_PREFIX)/node_modules/.bin/azurite-blob || \
	  npm install --silent --no-audit --no-fund --prefix $(NODE_PREFIX) azurite@3
