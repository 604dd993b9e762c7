# coredns-istio: `make run` serves the seeds' ServiceEntries on 127.0.0.1:1053; `make test` runs
# every test, installing what it needs (Debian packages, the pinned kube-apiserver and etcd).

GO      ?= go
BIN     ?= bin/coredns-istio
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/coredns/coredns/coremain.GitCommit=$(VERSION)

.PHONY: all build run test unit e2e fuzz bench bench-server bench-scale lint deps controlplane image clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/coredns-istio

run: build
	$(BIN) -conf corefile/Corefile.local

# Everything: lint, unit tests (with the race detector) and the end-to-end tests against a real
# kube-apiserver + etcd. The control plane is built once and cached under ~/.cache.
test: lint deps
	COREDNS_ISTIO_CONTROLPLANE="$$(test/tools/controlplane.sh)" \
		$(GO) test -race -count=1 -timeout 30m ./...
	$(MAKE) fuzz FUZZTIME=5s

# The fuzz targets, one at a time (their seed corpora in testdata/fuzz also run in every
# `go test`). `make test` fuzzes each for 5s as a regression test; RELIABILITY.md has the long
# runs (`make fuzz FUZZTIME=5m`).
FUZZTIME ?= 1m
FUZZ_TARGETS := plugin/istioglobal:FuzzServeDNS plugin/istioglobal:FuzzServiceEntryDocument \
	plugin/istioglobal:FuzzIncrementalEqualsFromScratch plugin/istioglobal:FuzzCorefile \
	internal/stubdomain:FuzzServerBlock internal/stubdomain:FuzzStubDomains
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "fuzz $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

unit:
	$(GO) test -race -count=1 ./plugin/... ./internal/... ./cmd/...

e2e: deps
	COREDNS_ISTIO_CONTROLPLANE="$$(test/tools/controlplane.sh)" \
		$(GO) test -count=1 -timeout 30m -v ./test/...

deps:
	test/tools/install-deps.sh

controlplane:
	test/tools/controlplane.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./plugin/istioglobal/

# The real server under dnsperf beside whoami, in deploy/'s shape (one CPU): several minutes.
bench-server: deps
	COREDNS_ISTIO_CONTROLPLANE="$$(test/tools/controlplane.sh)" \
		$(GO) test -run '^$$' -bench ServerQPS -benchtime 1x -timeout 30m -v ./test/

# Issue 10's scale benchmark: 10k and 100k ServiceEntries through the real API server; RSS,
# create→answered, query p99 idle and under churn beside hosts. About 15 minutes.
SCALE ?= 10000,100000
bench-scale: deps
	COREDNS_ISTIO_SCALE=$(SCALE) COREDNS_ISTIO_CONTROLPLANE="$$(test/tools/controlplane.sh)" \
		$(GO) test -run '^$$' -bench Scale -benchtime 1x -timeout 60m -v ./test/

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The container image coredns-istio:$(VERSION) (Dockerfile; deploy/ runs coredns-istio:latest
# unless an overlay sets the image). Needs a reachable Docker engine.
DOCKER ?= docker
image:
	@command -v $(DOCKER) >/dev/null 2>&1 || { \
		echo "make image: '$(DOCKER)' not found; install Docker (or set DOCKER=podman) to build the image" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { \
		echo "make image: no Docker engine reachable ('$(DOCKER) info' failed; is the daemon running, is DOCKER_HOST right?)" >&2; exit 1; }
	$(DOCKER) build --build-arg VERSION=$(VERSION) -t coredns-istio:$(VERSION) .

clean:
	rm -rf bin
