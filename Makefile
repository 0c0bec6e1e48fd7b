# The two commands: `make run` and `make test`. Everything else is here for developers and CI.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run serve test lint format bench browsers clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Migrate, load the demo, then serve the dashboard with a worker and beat; Ctrl-C stops all.
run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(VENV)/bin/honcho --procfile Procfile.dev start

# The same processes without touching the database first.
serve: $(STAMP)
	$(VENV)/bin/honcho --procfile Procfile.dev start

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

# The same benchmark without and with routing rules and SLAs; PostgreSQL too with DATABASE_URL.
.PHONY: bench-routing
bench-routing: $(STAMP)
	$(PY) bench/routing_overhead.py $(BENCH_ARGS)

# The KPI reports at scale: dashboard latency, a rebuild of the facts, maintenance cost.
.PHONY: bench-kpis
bench-kpis: $(STAMP)
	$(PY) bench/kpis.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache staticfiles
