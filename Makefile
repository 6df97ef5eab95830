# tagloop: every install step lives here; a machine needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tagloop demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check agent tools policies evals tests bench
	$(BIN)/ruff format --check agent tools policies evals tests bench
	$(BIN)/mypy agent tools policies evals

SERVE_HOME ?= /tmp/tagloop-bench-serve

bench: $(STAMP)
	@test -f $(SERVE_HOME)/.trained || { TAGLOOP_HOME=$(SERVE_HOME) $(BIN)/tagloop import lastfm ../shared/data/lastfm-2k \
		&& TAGLOOP_HOME=$(SERVE_HOME) $(BIN)/tagloop train && touch $(SERVE_HOME)/.trained; } || exit 1
	for b in ope tagging recsys serve bench_policies import_events ingest agent worker_sources simulate; do \
		echo "== bench/$$b.py"; TAGLOOP_HOME=$(SERVE_HOME) $(BIN)/python bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
