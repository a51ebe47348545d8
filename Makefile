# Linegate: `make run` brings the embedded stack up, `make test` checks everything.
# Both install what they need on a fresh machine (uv from PyPI if missing, then the lock file).

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist workers: one per core, at most four (each test starts its own nats-server).
PYTEST_WORKERS ?= auto

.PHONY: install run test lint fmt typecheck bench clean

# Bytecode is compiled at install: uv does not by default, and where PYTHONDONTWRITEBYTECODE is
# set (as on this machine) every process would compile each module it imports from source
# again (`linegate model push` spent 0.9 of its 1.4 s start-up in compile()). Stale .pyc files
# of edited sources are ignored by Python, never used.
install:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --all-packages --compile-bytecode
	$(BIN)/python -m compileall -q -j0 libs/src services/*/src cli/src

run: install
	$(BIN)/linegate up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy libs/src services/*/src cli/src

test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --maxprocesses 4

# The attestation bench loads the service with wrk (Debian's package) and falls back to a far
# slower Python client without it: installed here when this is a Debian machine run as root.
bench: install
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get install -y -q wrk >/dev/null 2>&1; } \
		|| echo "note: wrk is not installed; the attestation bench uses a Python client instead"
	$(BIN)/python bench/run.py

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf .linegate .pytest_cache .mypy_cache .ruff_cache
