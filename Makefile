# The two commands of the README: `make demo` and `make test`. Both install what is
# missing first (`make setup`, idempotent, seconds when nothing is missing).

VENV := .venv
PY := $(VENV)/bin/python
PACKAGES := p2v agent imagebuilder

.PHONY: setup lint typecheck test test-unit test-integration test-e2e demo fixtures bench clean

setup:
	@scripts/setup-host.sh

lint: setup
	$(VENV)/bin/ruff check $(PACKAGES) tests bench
	$(VENV)/bin/ruff format --check $(PACKAGES) tests bench

typecheck: setup
	$(VENV)/bin/mypy $(PACKAGES) tests/fixtures

# Fixtures first, so their (cached) build shows its own progress instead of
# happening silently inside a test.
fixtures: setup
	$(PY) -m tests.fixtures bios-ext4
	$(PY) -m tests.fixtures uefi-lvm

test: lint typecheck fixtures
	$(PY) -m pytest -v tests/unit tests/integration tests/e2e

test-unit: setup
	$(PY) -m pytest tests/unit

demo: setup
	$(VENV)/bin/p2v doctor
	$(PY) -m tests.fixtures bios-ext4 --boot
	@mkdir -p build/demo
	$(VENV)/bin/p2v copy --overwrite --verify "$$($(PY) -m tests.fixtures bios-ext4 | tail -1)" build/demo/bios-ext4.qcow2

# Benchmarks against peer tools (minutes; not part of `make test`).
bench: setup
	$(PY) -m bench.transfer

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
