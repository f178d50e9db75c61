# The two commands of README.md. Both set up .venv first (idempotent).
.PHONY: setup demo test dev

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/tracelake demo

test: setup
	bash scripts/test.sh

dev: setup
	@[ -n "$$TRACELAKE_SESSIONS_DIR" ] || mkdir -p data/sessions  # the default watched folder
	DAGSTER_HOME=$(CURDIR)/.dagster .venv/bin/python -m dagster_project.instance
	DAGSTER_HOME=$(CURDIR)/.dagster .venv/bin/dagster dev -m dagster_project.definitions -h 127.0.0.1 -p 3000
