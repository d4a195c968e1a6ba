# Two entry points: `make demo` (the main job) and `make test`.
# Both create the local virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all venv clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[tests]'
	# torchattacks is only used to cross-check our PGD in the tests; its
	# torchvision requirement would pull a CUDA torch build, and the
	# attack code never imports it.
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py --work-dir work_dirs/demo

test: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow" -p no:cacheprovider

test-all: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider

clean:
	rm -rf $(VENV) work_dirs data/avdigits
