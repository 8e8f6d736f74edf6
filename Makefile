# `make demo`: install into .venv, train the digits demo (samples, figures, test MSE in runs/digits)
#   and print the FID of 5,000 of its samples (classifier features).
# `make test`: install into .venv with the test tools (and the tensorboard and docs extras) and run
#   the test suite, which builds the documentation site too (tests/test_docs.py).
# `make docs`: build the documentation site into site/ (mkdocs build --strict).
# CPU installs pin PyTorch's CPU build; GPU users pass their own, e.g.
#   make demo TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test docs lint install clean

$(BIN)/latent-ebm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,tensorboard,docs]"
	touch $@

install: $(BIN)/latent-ebm

demo: install
	$(BIN)/latent-ebm train --preset digits --out runs/digits --force
	$(BIN)/latent-ebm eval runs/digits --metric fid --n 5000

test: install
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site
