# Packaging targets: cross-builds, .deb packages. Included from the top-level Makefile
# (`include packaging/package.mk`) and also usable alone (`make -f packaging/package.mk package`),
# which is how packaging/packaging_test.go runs it, with every output folder pointed elsewhere.
ifndef EDGEFLEET_PACKAGE_MK
EDGEFLEET_PACKAGE_MK := 1

SHELL := /bin/bash
export GOTOOLCHAIN := local
GO ?= go
# Same stamp as `make build`; scripts/package.sh turns it into a Debian version.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
export VERSION
# -s -w: no symbol table or DWARF in what goes to devices (about 30% smaller; panics still
# print file:line). Only the link step sees ldflags, so `make build`'s compile cache is reused.
PKG_LDFLAGS ?= -s -w
export PKG_LDFLAGS
PKG_BIN ?= bin
DIST ?= dist
HOST_GOARCH := $(shell $(GO) env GOARCH)
# Native cgo on an amd64 host; elsewhere Debian's x86-64 cross compiler.
CC_AMD64 ?= $(if $(filter amd64,$(HOST_GOARCH)),gcc,x86_64-linux-gnu-gcc)
CC_ARM64 ?= $(if $(filter arm64,$(HOST_GOARCH)),gcc,aarch64-linux-gnu-gcc)
export CC_ARM64

.PHONY: build-amd64 build-arm64 package package-amd64 package-arm64

build-amd64:
	CGO_ENABLED=1 GOOS=linux GOARCH=amd64 CC=$(CC_AMD64) $(GO) build \
	  -ldflags "$(PKG_LDFLAGS) -X github.com/edgefleet/edgefleet/internal/cli.Version=$(VERSION)" \
	  -o $(PKG_BIN)/linux-amd64/ ./cmd/agent ./cmd/controlplane

build-arm64:
	@scripts/build-arm64.sh $(PKG_BIN)/linux-arm64 >/dev/null

# .deb packages for both architectures into $(DIST)/ (the ONNX Runtime library of each arch
# comes from scripts/fetch-ort.sh's cache, fetched from npm when missing).
package: package-amd64 package-arm64

package-amd64: build-amd64
	scripts/package.sh amd64 $(PKG_BIN)/linux-amd64 $(DIST)

package-arm64: build-arm64
	scripts/package.sh arm64 $(PKG_BIN)/linux-arm64 $(DIST)

endif
