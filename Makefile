# The two commands a new user runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export HOBAN_HOME ?= $(CURDIR)/.hoban
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export YOLO_CONFIG_DIR ?= $(HOBAN_HOME)/ultralytics
export MPLBACKEND := Agg

.PHONY: setup demo test ui serve validate bench clean-venv

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

# torch comes first so pip takes the build on this machine's disk (pip.conf caps it there);
# ultralytics pulls in the GUI opencv-python, which shadows the headless one: keep headless,
# whichever extras are installed (a team server: `make setup EXTRAS=postgres,k8s`).
EXTRAS ?= dev
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	$(BIN)/pip uninstall --quiet -y opencv-python
	$(BIN)/pip install --quiet --force-reinstall --no-deps opencv-python-headless
	touch $@

# The instance config lives at the root; the default instance home links to it.
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	ln -s $(CURDIR)/dagster.yaml $@

demo: setup
	$(BIN)/hoban demo

validate: setup
	$(BIN)/dagster definitions validate -w workspace.yaml

test: validate
	deploy/test-system-packages.sh
	$(BIN)/python -m pytest

ui: setup
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The webserver and the daemon as two processes (as a team runs them), checked before they start;
# loopback only: Dagster's webserver has no login (README "Team deployment").
PORT ?= 3000
serve: setup
	$(BIN)/hoban serve --workspace workspace.yaml --host 127.0.0.1 --port $(PORT)

bench: demo  # the sweep benchmark measures the demo's own evaluation
	$(BIN)/hoban bench all --json

clean-venv:
	rm -rf $(VENV)
