# Two entry points, as the README says: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install quatrain into it (editable) on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
DEMO_DIR ?= out/demo

.PHONY: setup demo test lint typecheck pytest clean

$(BIN)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[test,plot]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	mkdir -p $(DEMO_DIR)
	$(BIN)/quatrain backends
	$(BIN)/python -c "import quatrain; m = quatrain.Autoencoder(quatrain.ModelConfig.preset('tiny')); quatrain.save(m, '$(DEMO_DIR)/tiny.safetensors'); print('saved', m.num_parameters(), 'parameters')"
	$(BIN)/quatrain inspect $(DEMO_DIR)/tiny.safetensors
	# The pretrained model that ships with quatrain, straight away (no training).
	$(BIN)/quatrain zoo list
	$(BIN)/quatrain reconstruct sonnets "Shall I compare thee to a summer's day? / Thou art more lovely and more temperate"
	# Real poetry: a small model on the default corpus (public-domain poems, packaged; GloVe 6B 50-d) for
	# at most 3 minutes, then held-out metrics (fully autoregressive) and a few held-out lines reconstructed.
	$(BIN)/quatrain train --preset small --backend auto --epochs 40 --lr 3e-3 --lr-decay 0.97 --time-limit 3 \
		--out $(DEMO_DIR)/small.safetensors
	$(BIN)/quatrain eval $(DEMO_DIR)/small.safetensors
	$(BIN)/quatrain reconstruct $(DEMO_DIR)/small.safetensors --lines 6

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy needs the import name 'quatrain'; the source folders are mapped to it by a tree of links.
typecheck: setup
	rm -rf build/typecheck && mkdir -p build/typecheck/quatrain
	for f in core/*; do ln -s "$(CURDIR)/$$f" build/typecheck/quatrain/; done
	for p in plugins registry cli; do ln -s "$(CURDIR)/$$p" build/typecheck/quatrain/$$p; done
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p quatrain

pytest: setup
	$(BIN)/python -m pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build out .pytest_cache .mypy_cache .ruff_cache
