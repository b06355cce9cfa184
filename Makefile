# The course's commands. `make lab` and `make test` set everything up on first use.
PY         ?= python3
VENV       ?= .venv
BIN        := $(abspath $(VENV))/bin
# The torch and torchvision builds to install first, as a matching pair (README, "Platforms");
# override for another build, e.g.
#   make setup TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 --index-url <your index>"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP      := $(VENV)/.installed
# nbgrader runs `alembic` through PATH: the environment's bin must come first.
export PATH := $(BIN):$(PATH)
export PYTHONHASHSEED := 0

LAB         ?=
SUBMISSIONS ?=
OUT         ?= autograder/work/out
JOBS        ?=
REGRADE     ?=
SCHEDULER   ?=
DB_URL      ?=
NB          ?=
PORT        ?= 8888
PYTEST_ARGS ?=
# pytest worker processes (pytest-xdist, one test file per worker at a time, so a file's
# module fixtures run once); 0 runs the suite in this process.
TEST_JOBS   ?= 2

.PHONY: setup lab test test-fast release references autograde check bench results lint strip clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ "$$(id -u)" = 0 ] && ! command -v bwrap >/dev/null 2>&1; then (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 || echo "WARNING: could not install bubblewrap: make autograde will NOT sandbox student code"; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

# jupyter_config/ is read too: labconfig/page_config.json disables JupyterLab's announcements
# plugin (it asks about "official Jupyter news" and fetches news and updates online).
lab: $(STAMP)
	JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter_config$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
	$(BIN)/jupyter lab --notebook-dir=labs --port=$(PORT) $(if $(filter 0,$(shell id -u)),--allow-root)

# Everything, the `slow` tests included (notebooks executed, classes graded): CI runs this.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

# The library and grading unit tests only: no notebook executed, no class graded.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

release: references
	$(BIN)/python -m autograder release

references: $(STAMP)
	$(BIN)/python -m autograder references

autograde: $(STAMP)
	@test -n "$(LAB)" -a -n "$(SUBMISSIONS)" || { echo "usage: make autograde LAB=<lab> SUBMISSIONS=<dir> [OUT=<dir>] [JOBS=<n>] [REGRADE=1] [SCHEDULER=tcp://host:port] [DB_URL=postgresql://...]"; exit 2; }
	$(BIN)/python -m autograder autograde --lab "$(LAB)" --submissions "$(SUBMISSIONS)" --out "$(OUT)" $(if $(JOBS),--jobs $(JOBS)) $(if $(REGRADE),--regrade) $(if $(SCHEDULER),--scheduler "$(SCHEDULER)") $(if $(DB_URL),--db-url "$(DB_URL)")

check: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make check NB=<path/to/notebook.ipynb>"; exit 2; }
	$(BIN)/python -m autograder check "$(NB)"

bench: $(STAMP)
	$(BIN)/python -m benchmarks

results: $(STAMP)
	$(BIN)/python -m course.claims labs

lint: $(STAMP)
	$(BIN)/ruff check course tests benchmarks autograder
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_import_layers.py

strip: $(STAMP)
	$(BIN)/nbstripout --keep-id solutions/*/*.ipynb labs/*/*.ipynb

clean:
	rm -rf autograder/work .pytest_cache
