# Newcomer commands:  make test  (tests)   |   make run  (the main job)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch for tests and the CPU demo; the Cog image pins its own (requirements.txt).
TORCH_CPU ?= torch==2.13.0
GOLDEN ?= ../shared/golden
ACTIONS ?= ["w", "w+left_rot", "left_rot", "d", "s+up_rot", "a"]
SPEEDS ?= [0.5, [0.5, 20], 30, 0.4, [0.3, 10], 0.4]

.PHONY: test run parity preview clean-venv

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_CPU)"
	grep -v '^torch==' requirements.txt > $(VENV)/requirements-notorch.txt
	$(PY) -m pip install -q -r $(VENV)/requirements-notorch.txt -r requirements-dev.txt
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q

parity: $(VENV)/.installed
	$(PY) -m gamecraft.parity $(GOLDEN)

# The main job. Until the generation pipeline lands this renders the camera-path preview.
run: preview

preview: $(VENV)/.installed
	$(PY) -m gamecraft preview --actions '$(ACTIONS)' --speeds '$(SPEEDS)' --out outputs/camera_preview.png

clean-venv:
	rm -rf $(VENV)
