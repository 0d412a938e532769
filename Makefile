# stillmotion: `make run` sets up and starts stillmotion; `make test` sets up and runs every check.
# Both create .venv on first use. See README.md.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Without an NVIDIA GPU the tests need only torch's CPU build; with one, the package's own range
# (`torch>=2.4`) installs the CUDA build. Override with e.g. `make test TORCH_SPEC="torch==2.6.0"`.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")

.PHONY: run example demo test check fmt browser postgres javaclient clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-installs when pyproject.toml changes. The service needs the `server` extra only; the checks add the
# dev tools, the `scale` extra (PostgreSQL driver, Ray) that the multi-worker tests use and the `quant` extra
# (torchao, int8 weights).
# --no-compile: Python compiles the modules it imports when it first imports them; byte-compiling all of
# torch and its neighbours up front costs a minute of a fresh setup for files never imported.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --no-compile

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) "$(TORCH_SPEC)"
	$(PIP_INSTALL) -e ".[server]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e ".[server,dev,scale,quant]"
	touch $@

# The service: web UI and REST API on http://127.0.0.1:7860 (jobs in ./data).
run: $(VENV)/.installed
	$(BIN)/stillmotion serve

# One video from the example image with the default model (downloaded on first use).
example: $(VENV)/.installed
	$(BIN)/stillmotion generate --image examples/seaside.jpg \
		--prompt "gentle waves roll in under a setting sun, the light shimmers on the sea" \
		--output out/seaside.mp4

# The same, offline and in seconds, with the built-in tiny random-weight model (its video is noise).
demo: $(VENV)/.installed
	$(BIN)/stillmotion generate --model tiny-i2vgen-xl --image examples/seaside.jpg \
		--prompt "gentle waves roll in" --num-frames 8 --num-inference-steps 4 --height 256 --width 384 \
		--output out/seaside-tiny.mp4

browser:
	bash scripts/install-browser.sh

# The store tests run on a throwaway PostgreSQL server that the test setup starts (tests/conftest.py).
postgres:
	bash scripts/install-postgres.sh

# The generated Java client (tests/clients) compiles against Debian's jars: Jackson, httpmime, jakarta.annotation.
javaclient:
	bash scripts/install-java-client.sh

test: $(VENV)/.installed-dev browser postgres javaclient check

check:
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/mypy src
	# Two processes, each test file whole in one (its module fixtures and servers stay together). Three were
	# tried: on 2 cores the workers of three service tests at once took over 90 s to start, and tests failed.
	$(BIN)/pytest -n 2 --dist loadfile

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache out
