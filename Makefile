# The README's two commands: `make serve` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The checkpoint `serve` serves and `demo` builds when missing: INVASIVE_CHECKPOINT if set.
CHECKPOINT ?= $(or $(INVASIVE_CHECKPOINT),models/model.safetensors)
export INVASIVE_CHECKPOINT := $(CHECKPOINT)

.PHONY: install serve demo test lint clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# A demo checkpoint, trained by the real training code on generated images, when none exists.
$(CHECKPOINT): | $(BIN)/.installed
	$(BIN)/invasive-train demo --output $(CHECKPOINT)

demo: $(CHECKPOINT)

serve: $(BIN)/.installed $(CHECKPOINT)
	$(BIN)/invasive-api

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
