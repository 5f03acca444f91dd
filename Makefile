# Vigil's build, test and demo entry points. Every target installs what it
# needs, so `make demo` and `make test` work on a fresh Debian 12 machine
# (as root: containerd needs it).

SHELL   := /bin/bash
GO      ?= go
BIN     := $(CURDIR)/bin
BUILD   := $(CURDIR)/build
# The private containerd used by the demo and the tests.
CTR_DIR ?= /var/lib/vigil-test/containerd
CTR_SOCK := $(CTR_DIR)/containerd.sock
export CTR_DIR

# VIGIL_CTR_DIR lets the tests restart that containerd (test/e2e's
# TestContainerdRestart); leave it unset against a containerd others use.
E2E_ENV := VIGIL_CRI_ENDPOINT=unix://$(CTR_SOCK) VIGIL_CONTAINERD_ADDRESS=$(CTR_SOCK) \
	VIGIL_IMAGES_DIR=$(BUILD)/images VIGIL_BIN=$(BIN)/vigil-race VIGIL_CRICTL=$(BIN)/crictl \
	VIGIL_REQUIRE_INTEGRATION=1 VIGIL_CTR_DIR=$(CTR_DIR)

.PHONY: all build build-race deps images crictl containerd-up containerd-down \
	test unit integration e2e lint demo bench clean chromium

all: build

build:
	$(GO) build -o $(BIN)/vigil ./cmd/vigil

# The end-to-end tests run vigil built with the race detector.
build-race:
	$(GO) build -race -o $(BIN)/vigil-race ./cmd/vigil

# deps installs containerd and runc from Debian when they are missing.
deps:
	bash test/scripts/containerd.sh install

# images builds the test images (OCI archives) from the Go sources in test/images.
images:
	bash test/scripts/images.sh $(BUILD)/images

crictl:
	@test -x $(BIN)/crictl || GOBIN=$(BIN) $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0

containerd-up: deps images
	bash test/scripts/containerd.sh up

containerd-down:
	bash test/scripts/containerd.sh down

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# chromium is the headless browser that drives the status page's test
# (admin/browser_test.go); Debian's package, installed when missing.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

# The proxy's tests run twice: on the plain listener's direct HTTP/1.1 path
# (as served), and with net/http serving every request (as for the requests
# the direct path hands over, and over TLS).
unit: chromium
	$(GO) test -race -count=1 ./...
	VIGIL_PROXY_SERVER=net/http $(GO) test -race -count=1 ./proxy

# integration and e2e need the private containerd (containerd-up).
integration:
	$(E2E_ENV) $(GO) test -race -count=1 ./runtime/... ./supervisor/...

e2e: build-race crictl
	$(E2E_ENV) $(GO) test -count=1 -timeout 20m -v ./test/e2e/... 2>&1 | tee $(BUILD)/e2e.log | \
		grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

# test: everything, on a real containerd started here (left running for the
# next run, as the demo leaves it; make containerd-down stops it).
test: lint containerd-up
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) e2e

# demo: the example manifests on a private containerd, in the foreground.
# Ctrl-C stops vigil, which removes the pods it made (configs/demo.yaml).
demo: containerd-up build
	@bash test/scripts/demo.sh $(BIN)/vigil

# bench: the probe, restart and proxy benchmarks (test/bench/run.sh), about
# 5 minutes. BENCH_ONLY picks some (e.g. BENCH_ONLY=restart); PROBE_TARGETS
# and RESTARTS size them.
BENCH_ONLY    ?= probes restart proxy
PROBE_TARGETS ?= 10000
RESTARTS      ?= 20

bench: build containerd-up
	BENCH_ONLY="$(BENCH_ONLY)" PROBE_TARGETS=$(PROBE_TARGETS) RESTARTS=$(RESTARTS) \
		$(E2E_ENV) bash test/bench/run.sh

clean: containerd-down
	rm -rf $(BIN) $(BUILD)
