# DUALRec: every target sets up what it needs (a virtual environment in .venv) before it runs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BASELINES := $(VENV)/.baselines
LLAMA_CPP_SHARE := $(VENV)/share/llama.cpp
LORA_CONVERTER := $(LLAMA_CPP_SHARE)/convert_lora_to_gguf.py

.PHONY: run test test-fast lint setup clean-venv

# The main job: the Streamlit app (http://127.0.0.1:8501).
run: $(STAMP) $(LORA_CONVERTER)
	$(BIN)/streamlit run app.py

# The whole test suite (RecBole baselines included), with the slow tests and the real-data checks when
# ../shared/data/ml-1m-full-order exists.
test: $(STAMP) $(BASELINES) $(LORA_CONVERTER)
	$(BIN)/python -m pytest --run-slow --run-realdata

# Formatting and lint (ruff, settings in pyproject.toml): `.venv/bin/ruff format .` fixes the formatting.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Fast tests only (what to run while editing): no slow, real-data or embedded-model (llm) tests, no model to build.
test-fast: $(STAMP) $(LORA_CONVERTER)
	$(BIN)/python -m pytest -q -m "not llm"

setup: $(STAMP) $(LORA_CONVERTER)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -r requirements-dev.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

# llama.cpp's LoRA converter (convert_lora_to_gguf.py with the conversion/ and gguf-py/ it imports), which turns a
# fine-tuned adapter into a GGUF LoRA for the llama.cpp engine (dualrec.llm.gguf_lora): pip fetches the installed
# llama-cpp-python's source distribution from the package index and the scripts are extracted from it.
$(LORA_CONVERTER): $(STAMP)
	rm -rf $(LLAMA_CPP_SHARE).new && mkdir -p $(LLAMA_CPP_SHARE).new/sdist
	$(BIN)/python -c 'from importlib.metadata import version; print(version("llama-cpp-python"))' > $(LLAMA_CPP_SHARE).new/VERSION
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: --dest $(LLAMA_CPP_SHARE).new/sdist \
		"llama-cpp-python==$$(cat $(LLAMA_CPP_SHARE).new/VERSION)"
	tar -xzf $(LLAMA_CPP_SHARE).new/sdist/llama_cpp_python-*.tar.gz -C $(LLAMA_CPP_SHARE).new --touch --strip-components=3 \
		--wildcards '*/vendor/llama.cpp/convert_lora_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/gguf/*'
	rm -rf $(LLAMA_CPP_SHARE).new/sdist $(LLAMA_CPP_SHARE) && mv $(LLAMA_CPP_SHARE).new $(LLAMA_CPP_SHARE)

# The optional RecBole extra, installed without dependency resolution so the pins of requirements.txt stay.
$(BASELINES): $(STAMP) requirements-baselines.txt
	$(BIN)/python -m pip install --no-deps -r requirements-baselines.txt
	touch $(BASELINES)

clean-venv:
	rm -rf $(VENV)
