#!/usr/bin/env bash
# Builds the Debian packages (make deb) with nfpm, a Go tool dependency of this
# module (`go tool nfpm`): one .deb per deployable in BINARIES whose source
# directory exists, configured by packaging/deb/<binary>.yaml.
#
#   BINARIES="trustpool-agent=compute-agent ..." DEB_VERSION=0.1.0 scripts/deb.sh [OUTDIR]
#
# Binaries are built with -trimpath, as PIE with full RELRO (cgo, dynamically
# linked against libc: the attestation service needs cgo for SQLite, and the
# others then resolve users and groups through NSS like every other daemon),
# with the version stamped into -version. Each gets a manual page made from
# its -help. File dates come from the last commit, so two builds of the same
# tree give the same packages.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${BINARIES:?set BINARIES (make deb does)}"
: "${DEB_VERSION:?set DEB_VERSION (make deb does)}"
OUT=${1:-build/deb}
DEB_BUILD=build/deb-work # packaging/deb/*.yaml read from here
export DEB_ARCH=${DEB_ARCH:-$(go env GOARCH)}
export DEB_VERSION
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2> /dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

rm -rf "$DEB_BUILD"
mkdir -p "$DEB_BUILD/bin" "$DEB_BUILD/man" "$OUT"

# The Debian changelog every package ships (lintian requires one).
{
  printf 'trustpool (%s) unstable; urgency=medium\n\n' "$DEB_VERSION"
  printf '  * Built from the Trustpool source tree; the changes are in its git history.\n\n'
  printf ' -- %s  %s\n' "$(sed -n 's/^maintainer: //p' packaging/deb/trustpool-agent.yaml)" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9 -n > "$DEB_BUILD/changelog.gz"

# The Nova filter's metadata (entry points: the flavor extra spec validators
# nova-api loads, the oslo.config options).
if [[ -d nova-filter-shim/python ]]; then
  tmp=$(mktemp -d)
  (cd nova-filter-shim/python && /usr/bin/python3 setup.py -q egg_info --egg-base "$tmp" > /dev/null 2>&1) ||
    { echo "deb.sh: python3 setup.py egg_info failed (python3-setuptools installed?)" >&2; exit 1; }
  mkdir -p "$DEB_BUILD/trustpool_filter.egg-info"
  for f in PKG-INFO entry_points.txt top_level.txt dependency_links.txt; do
    cp "$tmp/trustpool_filter.egg-info/$f" "$DEB_BUILD/trustpool_filter.egg-info/"
  done
  rm -rf "$tmp"
fi

# manpage BINARY SECTION: a manual page whose text is the binary's -help.
manpage() {
  local bin=$1 section=$2 help
  help=$("$DEB_BUILD/bin/$bin" -help 2>&1) || true
  printf '.TH %s %s "%s" "trustpool %s"\n' "${bin^^}" "$section" \
    "$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)" "$DEB_VERSION"
  printf '.SH NAME\n%s \\- %s\n' "$bin" "$(head -n1 <<< "$help" | sed 's/^[^:]*: //; s/\..*//')"
  printf '.SH DESCRIPTION\n.nf\n'
  sed -e 's/\\/\\e/g' -e 's/^[.'"'"']/\\\&&/' <<< "$help"
  printf '.fi\n.SH SEE ALSO\n/usr/share/doc/%s/operator-guide.md\n' "$bin"
}

ldflags="-s -w -linkmode=external -extldflags=-Wl,-z,relro,-z,now -X github.com/trustpool/trustpool/internal/daemon.version=$DEB_VERSION"
built=()
for pair in $BINARIES; do
  bin=${pair%%=*} dir=${pair#*=}
  if [[ -d $dir/cmd/$bin ]]; then
    pkg=./$dir/cmd/$bin
  elif [[ -d $dir ]]; then
    pkg=./$dir
  else
    continue
  fi
  echo "go build $bin"
  CGO_ENABLED=1 go build -trimpath -buildmode=pie -ldflags "$ldflags" -o "$DEB_BUILD/bin/$bin" "$pkg"
  section=8
  [[ $bin == trustpool ]] && section=1
  manpage "$bin" "$section" | gzip -9 -n > "$DEB_BUILD/man/$bin.$section.gz"
  built+=("$bin")
done

for bin in "${built[@]}"; do
  [[ -f packaging/deb/$bin.yaml ]] || { echo "deb.sh: no packaging/deb/$bin.yaml for $bin" >&2; exit 1; }
  go tool nfpm package --config "packaging/deb/$bin.yaml" --packager deb --target "$OUT/" | sed 's/^/  /'
done
