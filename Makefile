# The README's two commands: `make serve` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The checkpoint `serve` serves and `demo` builds when missing: INVASIVE_CHECKPOINT if set.
CHECKPOINT ?= $(or $(INVASIVE_CHECKPOINT),models/model.safetensors)
export INVASIVE_CHECKPOINT := $(CHECKPOINT)

.PHONY: install serve demo test lint clean container-test samples try

$(BIN)/.installed: pyproject.toml
	@echo "Setting up $(VENV): PyTorch with its CUDA libraries is ~6 GB, a few quiet minutes the first time (CPU-only machines: see README, Quickstart)"
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

# The README's sample photos (examples/photos; committed, this rewrites them).
samples: $(BIN)/.installed
	$(BIN)/python examples/make_photos.py

# The README's requests against a running service (`make serve` in another terminal), each
# answer printed: `make try`, `make try URL=http://host:8000`; sends $INVASIVE_API_KEY if set,
# and follows $INVASIVE_PORT as `make serve` does.
URL ?= http://127.0.0.1:$(or $(INVASIVE_PORT),8000)
PHOTOS := examples/photos
KEY := $(if $(INVASIVE_API_KEY),-H "X-API-Key: $$INVASIVE_API_KEY")
try:
	@for path in /health/live /health/ready /v1/model; do \
	  echo "== GET $$path"; curl -sS $(KEY) $(URL)$$path; echo; done
	@echo "== POST /v1/predict  file=$(PHOTOS)/plot-17.jpg"
	@curl -sS $(KEY) -F file=@$(PHOTOS)/plot-17.jpg $(URL)/v1/predict; echo
	@echo "== POST /v1/predict  body=$(PHOTOS)/plot-17.jpg (Content-Type: image/jpeg)"
	@curl -sS $(KEY) --data-binary @$(PHOTOS)/plot-17.jpg -H "Content-Type: image/jpeg" \
	  $(URL)/v1/predict; echo
	@echo "== POST /v1/predict/batch  files=plot-17.jpg, IMG_0042.HEIC, plot-18.jpg, notes.txt"
	@curl -sS $(KEY) -F files=@$(PHOTOS)/plot-17.jpg -F files=@$(PHOTOS)/IMG_0042.HEIC \
	  -F files=@$(PHOTOS)/plot-18.jpg -F files=@$(PHOTOS)/notes.txt $(URL)/v1/predict/batch; echo
	@echo "== GET /metrics (invasive_http_requests_total)"
	@curl -sS $(URL)/metrics | grep '^invasive_http_requests_total'

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile deploy/proxy/Dockerfile deploy/standin/python.Dockerfile

test: lint
	$(BIN)/python -m pytest

# The real image, built and run by a Docker engine (installed and started when missing, as
# root), through the README's compose flows, scale-out, replica kill and rolling update
# (tests/container). Minutes when the image layers are cached; a cold first run downloads torch.
container-test: $(BIN)/.installed
	INVASIVE_CONTAINER_TEST=1 $(BIN)/python -m pytest tests/container -v -s --timeout 2400

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
