# The two commands of the README: `make demo` and `make test`. Both install what is
# missing first (`make setup`, idempotent, seconds when nothing is missing).

VENV := .venv
PY := $(VENV)/bin/python
PACKAGES := p2v agent imagebuilder
ISO := build/p2v-agent.iso
JOB_ISO ?= build/p2v-agent-job.iso

.PHONY: setup fresh-check lint typecheck test test-unit test-integration test-e2e demo fixtures iso job-iso bench clean

setup:
	@scripts/setup-host.sh

# `make setup` on a brand-new Debian 12 chroot, with the committed tree (REV=HEAD):
# a machine that ran the set-up before cannot show a missing or conflicting step.
REV ?= HEAD
fresh-check:
	@scripts/fresh-check.sh $(REV)

lint: setup
	$(VENV)/bin/ruff check $(PACKAGES) boot-iso tests bench scripts
	$(VENV)/bin/ruff format --check $(PACKAGES) boot-iso tests bench scripts

typecheck: setup
	$(VENV)/bin/mypy $(PACKAGES) tests/fixtures tests/hosts tests/guests scripts/demo.py
	cd boot-iso && ../$(VENV)/bin/mypy isobuild

# Fixtures first, so their (cached) build shows its own progress instead of
# happening silently inside a test.
fixtures: setup
	$(PY) -m tests.fixtures bios-ext4
	$(PY) -m tests.fixtures bios-ext4 --converted
	$(PY) -m tests.fixtures uefi-lvm
	$(PY) -m tests.fixtures vmguest
	$(PY) -m tests.fixtures procnode

# Tests that boot no guest and launch no appliance run side by side, four at a time:
# most of their time is spent waiting on time limits. The others, one at a time (two
# guests booting at once on two cores would make their time limits flaky); a new
# folder of tests runs there unless it is named here.
SIDE_BY_SIDE := tests/unit tests/integration/agent tests/integration/transfer \
	tests/integration/jobs tests/integration/clone tests/integration/test_refusals.py

test: lint typecheck fixtures iso
	rm -rf build/test-host-logs
	$(PY) -m pytest -n 4 --durations=10 $(SIDE_BY_SIDE)
	P2V_TEST_HOST_LOGS=$(CURDIR)/build/test-host-logs \
		$(PY) -m pytest -v --durations=10 tests/integration tests/e2e \
		$(foreach d,$(filter tests/integration/%,$(SIDE_BY_SIDE)),--ignore=$(d))

test-unit: setup
	$(PY) -m pytest tests/unit

# The main job on the built-in sample server (a SATA-only Debian 12 image): boot it
# from the agent ISO in QEMU as a stand-in physical server, convert it through the
# agent to a KVM guest defined in libvirt, and boot that guest on virtio to prove it.
demo: setup iso
	$(VENV)/bin/p2v doctor
	$(PY) scripts/demo.py --iso $(ISO)

# The agent ISO, from Debian packages; its layers are cached by recipe hash
# (boot-iso/README.md), so this takes seconds unless the package set changed.
iso: setup
	cd boot-iso && ../$(PY) -m isobuild iso --output ../$(ISO)

# A copy of the agent ISO that carries one job's secret: make job-iso SECRET_FILE=F
job-iso: iso
	@test -n "$(SECRET_FILE)" || { echo "usage: make job-iso SECRET_FILE=F [JOB_ISO=$(JOB_ISO)]" >&2; exit 2; }
	cd boot-iso && ../$(PY) -m isobuild job-iso --base ../$(ISO) --secret-file "$(abspath $(SECRET_FILE))" --output "$(abspath $(JOB_ISO))"

# Benchmarks against peer tools (minutes; not part of `make test`).
bench: setup
	$(PY) -m bench.transfer

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
