# The two commands: `make demo` and `make test`. Both create .venv on first use and install from
# constraints.txt, the lock file (torch==2.13.0 there is the CPU build; an unpinned torch pulls CUDA).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install bench clean lock

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[train,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/webtext demo

test: lint
	$(BIN)/python -m pytest -q

# Style (ruff: pyproject's [tool.ruff]) and the import contracts (import-linter: [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Regenerate the lock file from the current environment.
lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^webtext' > constraints.txt

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .import_linter_cache
