# relief: `make demo` runs the whole programme on the embedded default; `make test` runs the tests.
# Both install what they need first (Python packages in .venv, Apache Kafka jars, Java, Maven).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_LIB := deploy/kafka/target/lib/.resolved
PYTEST_FLAGS ?=

.PHONY: install system-deps demo up test test-faults bench lint typecheck clean kafka-jars

install: $(STAMP) $(KAFKA_LIB)

system-deps:
	@bash deploy/install-system-deps.sh

$(STAMP): pyproject.toml
	@bash deploy/install-system-deps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

$(KAFKA_LIB): deploy/kafka/pom.xml
	@bash deploy/install-system-deps.sh
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies
	@touch $(KAFKA_LIB)

kafka-jars: $(KAFKA_LIB)

demo: install
	$(BIN)/relief demo

up: install
	$(BIN)/relief up

lint: $(STAMP)
	$(BIN)/ruff check shared services relief_cli bench tests
	$(BIN)/ruff format --check shared services relief_cli bench tests

typecheck: $(STAMP)
	$(BIN)/mypy shared relief_cli $(wildcard services/*/domain.py)

test: install lint typecheck
	$(BIN)/pytest -m "not fault and not slow" $(PYTEST_FLAGS)

test-faults: install
	$(BIN)/pytest -m "fault" $(PYTEST_FLAGS)

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.run --postgres $(BENCH_ARGS)

clean:
	rm -rf .relief .relief-test deploy/kafka/target
