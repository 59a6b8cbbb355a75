# The README's commands. Each sets up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: test lint demo run bench soak failover sim clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy orchestrator bot
	$(BIN)/python -m pytest -n $(or $(JOBS),2)

lint: $(STAMP)
	$(BIN)/python -m ruff check --fix .
	$(BIN)/python -m ruff format .

demo: $(STAMP)
	$(BIN)/vibes demo

run: $(STAMP)
	$(BIN)/vibes bot $(if $(SIM),--sim,)

bench: $(STAMP)
	$(BIN)/python -m bench

# The chaos soak: RUNS seeded fault schedules (default 500), a table of faults x outcomes into bench/results.md;
# SEED=N replays one schedule with the engine's log.
soak: $(STAMP)
	$(BIN)/python -m tests.chaos $(if $(SEED),--seed $(SEED) -v,--runs $(or $(RUNS),500))

# Active/standby: SIGKILL the active bot at five moments of a stage (and cut one's DB connection); prints what
# happened and writes the takeover section of bench/results.md.
failover: $(STAMP)
	$(BIN)/python -m tests.failover

sim: $(STAMP)
	$(BIN)/vibes sim

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
