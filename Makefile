# Two commands do all setup on a fresh machine:
#   make report   run every numbered notebook headless (PARAMS=params/default.yaml) -> reports/, figures/
#   make test     unit tests + every notebook under params/smoke.yaml
#   make demo     notebook 06 as a local web app (ask the trained graft by voice)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PARAMS ?= params/default.yaml
STAMP := $(VENV)/.installed

.PHONY: venv report test test-fast bench demo clean-runs

venv: $(STAMP)

# Re-install when the requirements or the two local packages' metadata change.
$(STAMP): requirements.txt lib/pyproject.toml transformers_fork/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e lib -e transformers_fork
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (surgvqa)" > /dev/null
	touch $(STAMP)

report: $(STAMP)
	$(PY) -m surgvqa.pipeline --params $(PARAMS)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The fast subset (no pipeline, training or multi-process runs).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(PY) -m surgvqa.bench --params $(PARAMS)

# Notebook 06 as a local web app (voila) on http://127.0.0.1:8866, with the run's trained models.
demo: $(STAMP)
	$(PY) -m surgvqa.demo --params $(PARAMS) --port 8866

clean-runs:
	rm -rf runs/smoke
