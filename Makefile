# Two commands do all setup on a fresh machine:
#   make report   run every numbered notebook headless (PARAMS=params/default.yaml) -> reports/, figures/
#   make test     unit tests + every notebook under params/smoke.yaml
#   make demo     notebook 06 as a local web app (ask the trained graft by voice)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PARAMS ?= params/default.yaml
STAMP := $(VENV)/.installed

.PHONY: venv system-deps report test test-fast bench demo clean-runs

venv: $(STAMP) system-deps

# The speech engines that come from Debian (surgvqa.speech): flite, and festival with two English voices.
DEBIAN_SPEECH := flite festival festvox-kallpc16k festvox-us-slt-hts
system-deps:
	@dpkg -s $(DEBIAN_SPEECH) >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(DEBIAN_SPEECH); }

# Re-install when the requirements or the two local packages' metadata change.
$(STAMP): requirements.txt lib/pyproject.toml transformers_fork/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e lib -e transformers_fork
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (surgvqa)" > /dev/null
	touch $(STAMP)

report: $(STAMP) system-deps
	$(PY) -m surgvqa.pipeline --params $(PARAMS)

# One worker per core, one torch thread each (more threads than cores slow every worker down).
test: $(STAMP) system-deps
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile tests

# The fast subset (no pipeline, training, multi-process runs or data steps of every profile).
test-fast: $(STAMP) system-deps
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile -m "not slow" tests

bench: $(STAMP) system-deps
	$(PY) -m surgvqa.bench --params $(PARAMS)

# Notebook 06 as a local web app (voila) on http://127.0.0.1:8866, with the run's trained models.
demo: $(STAMP)
	$(PY) -m surgvqa.demo --params $(PARAMS) --port 8866

clean-runs:
	rm -rf runs/smoke
