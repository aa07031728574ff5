# Entry points that work on a fresh machine: `make demo`, `make test` (the fast tier) and `make test-all`
# (everything, as CI runs it). Each creates .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2

.PHONY: demo test test-all lint venv clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# pytest -q ends with its summary line (passed, failed, skipped, deselected). Exit status 5 means that it
# collected no test: a mistake (a path, a marker), reported as such and failing the target.
PYTEST = status=0; $(BIN)/pytest -q -rs $(1) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make: pytest collected no tests (exit status 5)" >&2; fi; exit $$status

# The fast tier: unit tests, numerics against their oracles, CLI contracts and one tiny real Snakemake run.
test: $(STAMP)
	$(BIN)/ruff check .
	@$(call PYTEST,-m "not slow")

# Everything: the fast tier plus the tests marked slow (Snakemake runs and the demo's DAG, training,
# torchrun, the local Slurm cluster).
test-all: $(STAMP)
	$(BIN)/ruff check .
	@$(call PYTEST,)

lint: $(STAMP)
	$(BIN)/ruff check .

# The whole pipeline on the synthetic data (results-demo/ and data/synth/ in this folder), then the table.
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local --configfile config/demo.yaml \
		--cores $(CORES)
	@echo; cat results-demo/table.md

# Only the demo's files: other configurations' results folders and Snakemake's records of them stay.
clean-demo:
	rm -rf results-demo data/synth
