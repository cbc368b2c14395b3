#!/usr/bin/env bash
# Builds edgefleet-agent_<ver>_<arch>.deb and edgefleet-controlplane_<ver>_<arch>.deb with dpkg-deb
# from binaries already built for ARCH. The package layout, maintainer scripts and default
# configuration live in packaging/deb/ and packaging/systemd/; this script only assembles them.
#   usage: scripts/package.sh ARCH BINDIR OUTDIR      ARCH: amd64 | arm64 (Debian names)
#   env:   VERSION (any `git describe` output; turned into a Debian version), ORT_LIB (the ONNX
#          Runtime library for ARCH; default: scripts/fetch-ort.sh x64|arm64), DEB_COMPRESS (xz|gzip|zstd|none)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { echo "usage: scripts/package.sh amd64|arm64 BINDIR OUTDIR" >&2; exit 2; }
arch="$1" bindir="$2" outdir="$3"
case "$arch" in
  amd64) ort_arch=x64 elf_machine=62 ;;   # EM_X86_64
  arm64) ort_arch=arm64 elf_machine=183 ;; # EM_AARCH64
  *) echo "package: unsupported arch $arch (amd64 or arm64)" >&2; exit 2 ;;
esac
command -v dpkg-deb >/dev/null || { echo "package: dpkg-deb is missing (apt-get install -y dpkg-dev)" >&2; exit 1; }

# Debian versions must start with a digit and sort correctly: v1.2.3 -> 1.2.3,
# v1.2.3-4-gabc-dirty -> 1.2.3+4.gabc.dirty (after 1.2.3), v1.2.3-rc.1 -> 1.2.3~rc.1 (before 1.2.3),
# an untagged commit 3427d20-dirty -> 0.0.0+git3427d20.dirty.
debver() {
  local v="${1#v}"
  if [[ "$v" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]]; then echo "$v"; return; fi
  if [[ "$v" =~ ^([0-9]+\.[0-9]+(\.[0-9]+)?)-((rc|alpha|beta|pre)[^-]*)(-.*)?$ ]]; then
    local rest="${BASH_REMATCH[5]#-}"
    echo "${BASH_REMATCH[1]}~${BASH_REMATCH[3]}${rest:++${rest//-/.}}" | tr -c 'A-Za-z0-9.+~\n' '.'; return
  fi
  if [[ "$v" =~ ^([0-9]+\.[0-9]+(\.[0-9]+)?)-(.*)$ ]]; then
    echo "${BASH_REMATCH[1]}+${BASH_REMATCH[3]//-/.}" | tr -c 'A-Za-z0-9.+~\n' '.'; return
  fi
  echo "0.0.0+git${v//-/.}" | tr -c 'A-Za-z0-9.+~\n' '.'
}
version="$(debver "${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}")"
ort="${ORT_LIB:-$(scripts/fetch-ort.sh "$ort_arch")}"

# A binary of the wrong architecture would install fine and fail only on the device: check the
# ELF header's e_machine (little-endian u16 at offset 18) of everything we ship.
check_elf() {
  local m; m=$(od -An -tu2 -j18 -N2 "$1" | tr -d ' ')
  [ "$m" = "$elf_machine" ] || { echo "package: $1 is not a $arch ELF file (e_machine $m)" >&2; exit 1; }
}
for f in "$bindir/agent" "$bindir/controlplane" "$ort"; do
  [ -s "$f" ] || { echo "package: $f is missing" >&2; exit 1; }
  check_elf "$f"
done

mkdir -p "$outdir"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# build_deb NAME BINARY: assembles packaging/deb/NAME/* plus the files common to both packages.
build_deb() {
  local name="$1" bin="$2" root="$work/$1"
  install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/default" "$root/usr/share/doc/$name"
  install -m 0755 "$bin" "$root/usr/bin/$name"
  install -m 0644 "packaging/systemd/$name.service" "$root/lib/systemd/system/$name.service"
  # 0600: the file may hold the broker password or admin token; only systemd (root) reads it.
  install -m 0600 "packaging/deb/$name/default" "$root/etc/default/$name"
  install -m 0644 packaging/deb/copyright "$root/usr/share/doc/$name/copyright"
  for s in postinst prerm postrm; do install -m 0755 "packaging/deb/$name/$s" "$root/DEBIAN/$s"; done
  echo "/etc/default/$name" >"$root/DEBIAN/conffiles"
  if [ "$name" = edgefleet-agent ]; then
    install -d "$root/usr/lib/edgefleet"
    # The library is loaded with dlopen(), so it needs no ldconfig entry and stays private to us.
    install -m 0644 "$ort" "$root/usr/lib/edgefleet/libonnxruntime.so.1"
  fi
  local size; size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
    "packaging/deb/$name/control" >"$root/DEBIAN/control"
  dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$root" "$outdir/${name}_${version}_${arch}.deb" >/dev/null
  echo "$outdir/${name}_${version}_${arch}.deb"
}
build_deb edgefleet-agent "$bindir/agent"
build_deb edgefleet-controlplane "$bindir/controlplane"
