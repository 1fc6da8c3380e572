# All set-up for a fresh machine lives here: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sirocco-installed

# Services the integration tests use for real (CI has them running).
export SIROCCO_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export SIROCCO_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install models web browser run test test-unit lint bench bench-engine bench-ingest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel
	# torch first: pip takes the CPU build (2.13.0+cpu) from the wheel on disk.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[cpu,test,bench,langchain]"
	# PyPI's torchvision/torchaudio/torchcodec break transformers next to the CPU torch.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $(STAMP)

install: $(STAMP)

# Cached: instant once var/models/prepared.json is there.
models: $(STAMP)
	$(BIN)/sirocco models prepare

# The web UI (web/): npm ci from the committed lockfile, then vite build into
# web/dist (ignored by git), which the API serves at /. Rebuilt when a source changes.
WEB_SRC := $(shell find web/src web/public -type f 2>/dev/null) web/index.html \
           web/vite.config.ts web/tsconfig.json web/scripts/copy-vendor.mjs

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci
	touch $@

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SRC)
	cd web && npm run build

web: web/dist/index.html

# Debian's Chromium for the browser tests (CI runs as root); elsewhere say what to do.
browser:
	@test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium) \
	  || echo "warning: no /usr/bin/chromium: run 'apt-get install chromium' as root"

run: models web
	$(BIN)/sirocco up --ingest examples/docs

# Lint first: a new import cycle, layer breach, type error or oversized
# module fails CI before the tests run.
test: models web browser lint
	$(BIN)/python -m pytest tests -ra

test-unit: install
	$(BIN)/python -m pytest tests/unit -q

# ruff, mypy (pyproject's [tool.mypy]), import-linter's layers and the size rules.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m tests.structure

bench: models
	$(BIN)/python bench/engine_smoke.py --model mistral --n 8 --max-tokens 128

# Engine vs transformers, /v1/chat/completions vs bare vLLM, prefix caching: ~10 min, quiet machine.
bench-engine: models
	$(BIN)/python bench/engine.py

# SciFact (../shared/data) through Sirocco's pipeline vs LangChain's: ~25 min on 2 cores.
bench-ingest: models
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/ingest.py

clean:
	rm -rf var .pytest_cache web/dist tests/e2e/artifacts
