# make demo: run the whole loop on embedded defaults.  make test: lint, types, layering, tests.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.synced

.PHONY: demo test lint typecheck bench bench-train bench-stream bench-serve lock clean $(STAMP)

# Always synced (a no-op in ~0.1 s when nothing changed), so the environment is exactly the
# lock's: what a bench run added is removed again before the tests, as on a fresh machine.
$(STAMP):
	@test -x $(UV) || ($(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.8)
	@$(UV) sync --quiet --frozen --all-extras --compile-bytecode
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/loopline demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Tests that start a local Ray cluster run in a pytest process of their own: if the cluster
# dies under load it cannot take the rest of the suite with it, and they get one more try.
test: lint typecheck
	$(VENV)/bin/pytest -m "not ray_cluster"
	$(VENV)/bin/pytest -m ray_cluster -q || (echo "retrying the Ray cluster tests once" && $(VENV)/bin/pytest -m ray_cluster -q)

bench: $(STAMP)
	$(UV) sync --frozen --all-extras --group bench --compile-bytecode
	$(VENV)/bin/python benchmarks/ingest_files.py

bench-train: $(STAMP)
	$(UV) sync --frozen --all-extras --group bench --compile-bytecode
	$(VENV)/bin/python benchmarks/train_tabular.py

# Needs the Mosquitto broker on 127.0.0.1:1883 (pass ARGS="--url mqtt://host:port --jetstream").
bench-stream: $(STAMP)
	$(VENV)/bin/python benchmarks/stream_mqtt.py $(ARGS)

# Serving benchmarks: wrk when installed (apt-get install wrk), Redis on 127.0.0.1:6379 for
# the Redis case (skipped when unreachable). ARGS: flags both scripts take, e.g. --seconds 5.
bench-serve: $(STAMP)
	$(VENV)/bin/python benchmarks/serve_predict.py $(ARGS)
	$(VENV)/bin/python benchmarks/serve_recommend.py $(ARGS)

lock:
	$(UV) lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
