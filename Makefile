# One command to set up and run, one to set up and test, one for LangGraph Studio. All create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: setup run test studio clean

$(VENV)/.installed: pyproject.toml scripts/install_torch.sh scripts/install_bubblewrap.sh
	bash scripts/install_bubblewrap.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	bash scripts/install_torch.sh $(PY)
	$(PY) -m pip install -q -e ".[dev,studio,ray]"
	touch $@

setup: $(VENV)/.installed

run: setup         ## a campaign: offline demo with no key/GPU; pass flags with ARGS="..."
	$(PY) -m graph.run $(ARGS)

# pytest-xdist processes, one per core: each test's runs use one torch thread (tests/conftest.py).
# --maxschedchunk 1 hands out tests one at a time in collection order, the longest campaigns first
# (tests/conftest.py: slow(seconds)), so no worker is left with a block of them at the end.
TEST_WORKERS ?= 2
test: setup        ## the whole test suite (CPU)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxschedchunk 1 $(PYTEST_ARGS)

studio: setup      ## LangGraph Studio: `langgraph dev` on the campaign graph; pass flags with ARGS="..."
	$(VENV)/bin/langgraph dev --no-reload --no-browser $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
