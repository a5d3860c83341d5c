# Trustpool build, test and demo targets. `make help` lists them.
#
# Both entry points install what is missing first (Debian packages with
# apt-get, Go modules, golangci-lint), so a fresh Debian 12 machine needs only
# `make demo` or `make test`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO            ?= go
# The version stamped into the binaries (-version) and the .deb packages.
VERSION       ?= 0.1.0
# Tools built from source land here, outside the repository.
TOOLS         ?= $(HOME)/.cache/trustpool-tools
GOLANGCI_VERSION := v2.15.0
GOLANGCI_LINT := $(TOOLS)/golangci-lint
FUZZ_TIME     ?= 30s
TEST_TIMEOUT  ?= 30m
# The repository may have no commit yet; do not stamp VCS data into binaries.
export GOFLAGS := -buildvcs=false $(GOFLAGS)

# Debian packages the project needs (tests start these services themselves;
# nothing runs as a system service).
DEB_PACKAGES := \
	gcc libc6-dev libssl-dev pkg-config git make ca-certificates curl \
	rabbitmq-server \
	python3-oslo.messaging python3-oslo.policy python3-keystone python3-keystonemiddleware python3-openstackclient \
	python3-nova python3-oslotest python3-wsgi-intercept python3-placement \
	python3-pip python3-setuptools \
	swtpm swtpm-tools tpm2-tools qemu-guest-agent cryptsetup-bin \
	mariadb-server mariadb-client postgresql postgresql-client \
	bats shellcheck python3-bashate \
	systemd lintian debootstrap

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Deployables: binary name = directory; built (and packaged by make deb, with
# packaging/deb/<binary>.yaml) only when the directory exists. The main
# package is either the directory itself or cmd/<binary> below it.
BINARIES := trustpool-agent=compute-agent trustpool-attestation=attestation-service trustpool-filter-shim=nova-filter-shim trustpool=cli
LDFLAGS  := -X github.com/trustpool/trustpool/internal/daemon.version=$(VERSION)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: deps
deps: deps-apt deps-go deps-tools deps-python ## install missing Debian packages, Go modules, golangci-lint and the Nova filter (idempotent)

.PHONY: deps-apt
deps-apt:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q '^install ok installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $$missing; \
	fi

# The Nova filter package, installed editable into Debian's Python (no PyPI
# here: --no-index, --no-deps; its only dependency, nova, comes from Debian).
# Always re-run (about 2 s): an earlier install may point at a checkout
# that has since been removed or lost its egg-info (entry points).
.PHONY: deps-python
deps-python: deps-apt
	/usr/bin/python3 -m pip install -q --break-system-packages --no-build-isolation --no-deps --no-index \
	  -e nova-filter-shim/python 2>&1 | { grep -v "Running pip as the 'root' user" || true; }

.PHONY: deps-go
deps-go:
	$(GO) mod download

.PHONY: deps-tools
deps-tools:
	@if ! "$(GOLANGCI_LINT)" version 2>/dev/null | grep -q "version $(GOLANGCI_VERSION:v%=%) "; then \
	  echo "installing golangci-lint $(GOLANGCI_VERSION) into $(TOOLS)"; \
	  mkdir -p "$(TOOLS)"; \
	  GOBIN="$(TOOLS)" GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION); \
	fi

.PHONY: fmt-check
fmt-check: ## fail if gofmt would change a file
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## go vet
	$(GO) vet ./...

.PHONY: lint
lint: deps-tools lint-devstack ## golangci-lint (.golangci.yml), shellcheck, the DevStack plugin's shellcheck and bashate, references in docs
	"$(GOLANGCI_LINT)" run ./...
	scripts/check-doc-refs.sh
	@scripts=$$(find . -path ./.git -prune -o -path ./devstack -prune -o -name '*.sh' -print | sort; \
	  [ -f .ci/run ] && echo .ci/run; echo packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm); \
	echo shellcheck $$scripts; shellcheck $$scripts

# DevStack's own style flags (its tox bashate environment), over every shell
# file of the plugin; shellcheck follows the files the plugin sources.
.PHONY: lint-devstack
lint-devstack: ## shellcheck -x and bashate over devstack/
	@files=$$(find devstack -type f \( -name '*.sh' -o -name settings -o -path 'devstack/lib/*' \) | sort); \
	echo shellcheck -x $$files tests/devstack/*.bash tests/devstack/*.bats; \
	shellcheck -x -s bash $$files tests/devstack/*.bash tests/devstack/*.bats; \
	echo bashate -iE006 -eE005,E042,E043 $$files; bashate -iE006 -eE005,E042,E043 $$files

.PHONY: test
test: deps fmt-check vet lint test-units test-devstack test-deb ## everything CI runs: deps, gofmt, vet, lint, unit files, DevStack plugin, packages, then Go unit and integration tests with -race
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

.PHONY: test-units
test-units: ## systemd units: systemd-analyze security (exposure at most 2.0) and verify
	tests/systemd/check-units.sh

.PHONY: test-devstack
test-devstack: ## the DevStack plugin's bats suite (our fakes of DevStack's functions); go test ./tests/devstack adds the real binaries, systemd and Keystone
	tests/devstack/run.sh

# Two builds of the packages at two versions, for the upgrade check.
.PHONY: test-deb
test-deb: ## lintian, then install/upgrade/remove/purge of the .debs in a throwaway Debian 12 root (cached in ~/.cache/trustpool-deb)
	BINARIES="$(BINARIES)" DEB_VERSION=$(VERSION) scripts/deb.sh build/deb-test/v1 > /dev/null
	BINARIES="$(BINARIES)" DEB_VERSION=$(VERSION)+upgradetest scripts/deb.sh build/deb-test/v2 > /dev/null
	$(SUDO) tests/packaging/check.sh build/deb-test/v1 build/deb-test/v2

.PHONY: test-short
test-short: ## unit tests only (integration tests skip with -short)
	$(GO) test -short -count=1 ./...

.PHONY: build
build: ## build the deployables that exist into bin/
	@mkdir -p bin
	@for pair in $(BINARIES); do \
	  bin=$${pair%%=*}; dir=$${pair#*=}; \
	  if [ -d "$$dir/cmd/$$bin" ]; then pkg=./$$dir/cmd/$$bin; \
	  elif [ -d "$$dir" ]; then pkg=./$$dir; \
	  else continue; fi; \
	  echo "$(GO) build -o bin/$$bin $$pkg"; \
	  $(GO) build -ldflags "$(LDFLAGS)" -o "bin/$$bin" "$$pkg"; \
	done

.PHONY: api-docs
api-docs: ## render docs/api/README.md from the OpenAPI document docs/api/openapi.yaml (a test checks it is up to date)
	$(GO) test -count=1 -run TestAPIPageUpToDate ./internal/attestapi/apidoc -update

.PHONY: deb
deb: ## Debian packages of the deployables that exist, into build/deb (nfpm, a go.mod tool); VERSION=x.y.z
	BINARIES="$(BINARIES)" DEB_VERSION=$(VERSION) scripts/deb.sh build/deb

.PHONY: demo
demo: deps ## the whole system on loopback: RabbitMQ, Keystone, attestation service, three agents on swtpms (scripts/demo.sh; `scripts/demo.sh echo` for the messaging demo)
	scripts/demo.sh

.PHONY: bench-oslo
bench-oslo: deps ## RPC round trips/s and latency: Go<->Go against Python<->Python oslo.messaging
	tests/interop/bench.sh

.PHONY: bench-filter
bench-filter: deps ## TrustedFilter's added scheduling time over 1,000 hosts (Nova's filter handler, stock filters vs + TrustedFilter)
	TRUSTPOOL_FILTER_BENCH=1 $(GO) test -count=1 -v -run TestBenchmark ./nova-filter-shim/python/

.PHONY: bench-placement
bench-placement: deps ## scheduling time at 1,000 and 5,000 hosts through Nova's scheduler and real Placement, TrustedFilter alone vs the trait prefilter + TrustedFilter; verdict change → trait in Placement (p50/p99)
	TRUSTPOOL_PLACEMENT_BENCH=1 $(GO) test -count=1 -v -timeout 90m -run TestBenchmarkPlacement ./nova-filter-shim/python/
	TRUSTPOOL_BENCH_RUNS=20 $(GO) test -count=1 -v -run TestBenchVerdictToTrait ./tests/integration/

.PHONY: bench-attestation
bench-attestation: deps ## time from a PCR extend to the signed untrusted verdict on the fanout (p50/p99)
	TRUSTPOOL_BENCH_RUNS=20 $(GO) test -count=1 -v -run TestBenchExtendToUntrusted ./tests/integration/

# Fleet scale: simulated hosts (simulated TPMs) against the service and a
# filter shim, each in its own process. Hours at 10,000 hosts on two cores:
# run it when the machine is otherwise idle.
BENCH_FLEET_HOSTS  ?= 1000,5000,10000
BENCH_FLEET_DBS    ?= sqlite,mariadb
BENCH_FLEET_WINDOW ?= 120s
BENCH_FLEET_PROBES ?= 40

.PHONY: bench-fleet
bench-fleet: deps ## fleet scale: BENCH_FLEET_HOSTS simulated hosts at 30 s on BENCH_FLEET_DBS: CPU, RSS, broker and db CPU, attestations/s, history and db growth, detection p50/p99 at a real shim (table in build/bench-fleet.md)
	@mkdir -p build
	TRUSTPOOL_FLEET_BENCH=$(BENCH_FLEET_HOSTS) TRUSTPOOL_FLEET_DBS=$(BENCH_FLEET_DBS) TRUSTPOOL_FLEET_INTERVAL=30s \
	  TRUSTPOOL_FLEET_WINDOW=$(BENCH_FLEET_WINDOW) TRUSTPOOL_FLEET_PROBES=$(BENCH_FLEET_PROBES) \
	  TRUSTPOOL_FLEET_BENCH_OUT=$(CURDIR)/build/bench-fleet.md \
	  $(GO) test -count=1 -v -timeout 6h -run TestBenchFleet ./tests/integration/
	@cat build/bench-fleet.md

.PHONY: bench-launch
bench-launch: deps ## trusted launch on swtpm: notification → secret unsealed and POST → receipt delivered, with the phase split (p50/p99)
	TRUSTPOOL_BENCH_LAUNCHES=60 $(GO) test -count=1 -v -run TestBenchLaunch ./tests/integration/

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZ_TIME each (default 30s)
	FUZZ_TIME=$(FUZZ_TIME) scripts/fuzz.sh

.PHONY: clean
clean: ## remove build output
	rm -rf bin build
