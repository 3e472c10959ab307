# Two commands set everything up on a machine with only Python: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_PROCESSES ?= 3

.PHONY: demo test lint format bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/driftline demo

# Lint first (fast), then the suite on three processes (pytest-xdist; each has its own
# embedded broker). Three on two cores: the broker tests spend most of their time waiting
# (group joins, session expiries, worker processes starting), so a third process fills
# that time (pytest 6:58 against 9:57 with two, the same day); four gained little more
# (6:31-6:51) and slowed the foreign-log tests by half. An idle process takes tests
# queued for another (worksteal: the long broker tests otherwise leave one process
# waiting at the end). pytest exits 5 when it collected nothing: that is a failure here,
# not a pass.
test: $(STAMP) lint browser
	@$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist worksteal --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the run" >&2; exit 1; fi; \
	exit $$rc

# The report's browser test uses the system Chromium (Debian's package; Playwright never
# downloads one). Installed when this is Debian and we may; otherwise that test is skipped
# with its reason and everything else still runs.
browser:
	@command -v chromium >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } || \
	echo "chromium is not installed and could not be: the browser test will be skipped" >&2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/detection_quality.py
	$(BIN)/python benchmarks/moa_quality.py
	$(BIN)/python benchmarks/feedback_quality.py
	$(BIN)/python benchmarks/replay_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
