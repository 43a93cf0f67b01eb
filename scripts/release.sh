#!/usr/bin/env bash
# Release builds: the outpost binary for linux amd64, arm64 and armv7, each
# stamped with its version, commit and date, and a Debian package of each
# made with nfpm (github.com/goreleaser/nfpm, run as a pinned Go tool).
#
#   ./scripts/release.sh                         every architecture, into dist/
#   ./scripts/release.sh --arch amd64 --out DIR  one architecture, into DIR
#   VERSION=v1.2.0 ./scripts/release.sh          a version other than git's
#
# Version: VERSION, else the tag v* on HEAD, else <last v* tag or v0.0.0>-
# dev.<commit time>.<commit> (a pre-release of the next version, sorted
# before it); "+dirty" when the tree has uncommitted changes. The package
# version is the same without the "v", its first "-" written "~" (Debian's
# "sorts before"). Commit and date are HEAD's and its commit time (UTC), so
# a commit always gives the same binaries.
#
# Writes, per architecture (amd64, arm64, armv7 = Debian armhf):
#   outpost_<version>_linux_<arch>          static binary (CGO off, -trimpath, stripped)
#   outpost_<deb version>_<deb arch>.deb    the package (scripts/deb/nfpm.yaml)
# and SHA256SUMS over all of them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
nfpm_version=v2.48.0
pkg=github.com/outpost-edge/outpost/internal/buildinfo

arches="amd64 arm64 armv7"
out="$root/dist"
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case "$1" in
	--arch) [ $# -ge 2 ] || { echo "release.sh: --arch needs a value" >&2; exit 2; }; arches="$2"; shift ;;
	--out) [ $# -ge 2 ] || { echo "release.sh: --out needs a directory" >&2; exit 2; }; out="$2"; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

commit=$(git rev-parse HEAD)
date=$(TZ=UTC git show -s --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd HEAD)
version=${VERSION:-}
if [ -z "$version" ]; then
	if ! version=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null); then
		base=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || echo v0.0.0)
		version="$base-dev.$(TZ=UTC git show -s --date=format-local:%Y%m%d%H%M%S --format=%cd HEAD).${commit:0:12}"
	fi
	if [ -n "$(git status --porcelain --untracked-files=no)" ]; then version+="+dirty"; fi
fi
case "$version" in
v[0-9]*) ;;
[0-9]*) version="v$version" ;;
*) echo "release.sh: VERSION $version: want v<major>.<minor>.<patch>[-pre]" >&2; exit 2 ;;
esac
debversion=${version#v}
debversion=${debversion/-/\~}

mkdir -p "$out"
out="$(cd "$out" && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "release $version (package $debversion), commit $commit, $date, into $out"

# The packager, built once from the module proxy at a pinned version.
GOBIN="$tmp/bin" go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$nfpm_version"

# The package's unit and config: the repository's, with the binary in
# /usr/bin (Debian packages stay out of /usr/local) and data_dir where the
# unit keeps it, so the CLI run with --config finds the admin token.
sed 's|^ExecStart=/usr/local/bin/outpost |ExecStart=/usr/bin/outpost |' configs/outpost.service > "$tmp/outpost.service"
sed 's|^data_dir: ./data$|data_dir: /var/lib/outpost|' configs/outpost.yaml > "$tmp/outpost.yaml"
grep -q '^ExecStart=/usr/bin/outpost run ' "$tmp/outpost.service" || { echo "release.sh: configs/outpost.service: no ExecStart=/usr/local/bin/outpost line to point at /usr/bin" >&2; exit 1; }
grep -q '^data_dir: /var/lib/outpost$' "$tmp/outpost.yaml" || { echo "release.sh: configs/outpost.yaml: no 'data_dir: ./data' line to point at /var/lib/outpost" >&2; exit 1; }

files=()
for arch in $arches; do
	case "$arch" in
	amd64) goarch=amd64 goarm="" debarch=amd64 ;;
	arm64) goarch=arm64 goarm="" debarch=arm64 ;;
	armv7) goarch=arm goarm=7 debarch=armhf ;;
	*) echo "release.sh: unknown architecture $arch (amd64, arm64, armv7)" >&2; exit 2 ;;
	esac
	bin="outpost_${version}_linux_${arch}"
	echo "building $bin"
	CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -trimpath \
		-ldflags "-s -w -X $pkg.version=$version -X $pkg.commit=$commit -X $pkg.date=$date" \
		-o "$out/$bin" ./cmd/outpost
	deb="outpost_${debversion}_${debarch}.deb"
	echo "packaging $deb"
	cp "$out/$bin" "$tmp/outpost"
	OUTPOST_STAGE="$tmp" OUTPOST_DEB_VERSION="$debversion" OUTPOST_DEB_ARCH="$debarch" \
		"$tmp/bin/nfpm" package --config scripts/deb/nfpm.yaml --packager deb --target "$out/$deb" >/dev/null
	files+=("$bin" "$deb")
done
(cd "$out" && sha256sum "${files[@]}" > SHA256SUMS)
echo "done: ${files[*]} SHA256SUMS"
