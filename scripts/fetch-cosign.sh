#!/usr/bin/env bash
# Prints the path of a cached cosign binary, building it with `go install` only when it is absent
# (or is not the pinned version). Tests in ota/sign use it for the cosign interoperability checks;
# building takes about 3 minutes and 1.7 GB of memory, so the binary is cached, never rebuilt per test.
#   usage: scripts/fetch-cosign.sh [--no-build]
#          --no-build: print the path if the pinned binary is cached, else exit 3 without building
#          (what `go test` uses: a test must not start a 3-minute build behind the caller's back)
#   env:   EDGEFLEET_CACHE (default ~/.cache/edgefleet), COSIGN_VERSION (default v2.6.5)
# Only the path goes to stdout; build progress goes to stderr.
set -euo pipefail
ver="${COSIGN_VERSION:-v2.6.5}"
cache="${EDGEFLEET_CACHE:-$HOME/.cache/edgefleet}"
bindir="$cache/bin"
bin="$bindir/cosign"
export GOTOOLCHAIN=local

# The module's build info names the version it was built from; a binary of another version (an
# older cache) would make the interop tests prove nothing about the version we document.
is_pinned() {
  [ -x "$bin" ] && command -v go >/dev/null &&
    go version -m "$bin" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/sigstore/cosign/v2[[:space:]]+$ver([[:space:]]|$)"
}
# Without go we cannot check the version; an executable that exists is the best we have.
if [ -x "$bin" ] && { ! command -v go >/dev/null || is_pinned; }; then echo "$bin"; exit 0; fi
if [ "${1:-}" = "--no-build" ]; then
  echo "fetch-cosign: no cosign $ver at $bin; run scripts/fetch-cosign.sh to build it" >&2; exit 3
fi
command -v go >/dev/null || { echo "fetch-cosign: go is needed to build cosign" >&2; exit 1; }

mkdir -p "$bindir"
# Two test processes may ask at once: the lock makes the second wait for the first build instead of
# starting its own.
exec 9>"$bindir/.cosign.lock"
if command -v flock >/dev/null; then flock 9; fi
if is_pinned; then echo "$bin"; exit 0; fi

# Build into a temporary GOBIN beside the target and rename, so nobody ever runs a half-written binary.
tmp=$(mktemp -d "$bindir/.cosign-build.XXXXXX"); trap 'rm -rf "$tmp"' EXIT; trap 'exit 130' INT TERM
echo "fetch-cosign: building cosign $ver (about 3 minutes)" >&2
GOBIN="$tmp" go install "github.com/sigstore/cosign/v2/cmd/cosign@$ver" >&2
mv -f "$tmp/cosign" "$bin"
echo "$bin"
