# Everyday commands. Everything runs from a virtualenv in .venv made by `make setup`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup system-packages binaries router-crds lint test unit sandbox demo bench clean

setup: system-packages $(VENV)/.installed binaries router-crds ## everything the tests need, on a fresh machine

system-packages: ## Debian packages the tests start for real as processes, never as services: Prometheus, Alertmanager, openssl
	@bash hack/install-system-packages.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,sandbox]'
	touch $@

binaries: ## kube-apiserver, etcd, kubectl, ..., helm, KWOK and Contour, built from Go modules and cached
	bash hack/build-control-plane.sh >/dev/null
	bash hack/build-helm.sh >/dev/null
	bash hack/build-kwok.sh >/dev/null
	bash hack/build-contour.sh >/dev/null

router-crds: ## Istio and KServe CRDs from pinned Go modules, cached, for the router integration tests
	bash hack/fetch-router-crds.sh >/dev/null

lint: setup ## ruff and mypy --strict (after setup: `make test` works as a fresh machine's first command)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint ## the whole suite: lint, unit and integration tests
	$(PY) -m pytest tests

unit: $(VENV)/.installed ## unit tests only (no server)
	$(PY) -m pytest tests/unit

bench: setup ## the benchmarks: the judge's error rates (about 10 min), scale (1000 rollouts), rollback latency, alert to weight 0
	$(PY) bench/judge.py --runs 300
	$(PY) bench/scale.py
	$(PY) bench/rollback_latency.py --runs 5 --interval 5
	$(PY) bench/incident.py --runs 20

clean:
	rm -rf $(VENV) out

.PHONY: sandbox-down

sandbox: setup ## start the whole local environment in the background and print where everything is
	$(PY) -m sandbox up

sandbox-down: $(VENV)/.installed ## stop everything `make sandbox` started
	$(PY) -m sandbox down

demo: setup ## four scripted scenes (a good model promoted, two bad ones rolled back, a promotion undone by an alert); pictures in out/demo/
	$(PY) -m sandbox.demo
