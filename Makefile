# Newcomer commands:  make test  (tests)   |   make run  (the main job)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch for tests and the CPU demo; the Cog image pins its own (requirements.txt).
TORCH_CPU ?= torch==2.13.0
GOLDEN ?= ../shared/golden
ACTIONS ?= ["w", "w+left_rot", "left_rot", "d", "s+up_rot", "a"]
SPEEDS ?= [0.5, [0.5, 20], 30, 0.4, [0.3, 10], 0.4]

.PHONY: test lint run generate parity preview clean-venv

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_CPU)"
	grep -v '^torch==' requirements.txt > $(VENV)/requirements-notorch.txt
	$(PY) -m pip install -q -r $(VENV)/requirements-notorch.txt -r requirements-dev.txt
	touch $@

# Lint first (ruff, formatting, import-linter's layer and cycle contracts), then the tests.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q

parity: $(VENV)/.installed
	$(PY) -m gamecraft.parity $(GOLDEN)

# The main job: the Cog server on 127.0.0.1:$(PORT) + the controller page on :$(UI_PORT) (tiny CPU weights
# without a GPU/weights, said loudly),
# one demo prediction saved under outputs/, then it keeps serving.
PORT ?= 5000
UI_PORT ?= 8080
run: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) tools/serve.py --port $(PORT) --ui-port $(UI_PORT)

# One video from the command line (same pipeline, no server).
generate: $(VENV)/.installed
	$(PY) -m gamecraft generate --actions '$(ACTIONS)' --speeds '$(SPEEDS)' --out outputs

preview: $(VENV)/.installed
	$(PY) -m gamecraft preview --actions '$(ACTIONS)' --speeds '$(SPEEDS)' --out outputs/camera_preview.png

clean-venv:
	rm -rf $(VENV)
