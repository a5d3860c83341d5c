#!/usr/bin/env bash
# Package checks (make test-deb): lintian, then install, upgrade, remove and
# purge of the .debs in a throwaway Debian 12 root.
#
#   tests/packaging/check.sh DEBDIR_V1 DEBDIR_V2
#
# DEBDIR_V1 and DEBDIR_V2 hold the same packages at two versions (make
# test-deb builds them). The root is a debootstrap --variant=minbase of
# bookworm with what the packages depend on, built once and cached in
# ~/.cache/trustpool-deb (about 1-2 minutes and 50 MB of downloads the first
# time). Every run gets a fresh copy: an overlay over the cached root inside a
# private mount namespace (a plain copy where overlayfs is unavailable), so
# nothing on this machine changes and nothing outlives the run. Needs root,
# debootstrap, lintian and systemd-analyze (make deps installs them).
#
# systemd does not run inside the root, so /run/systemd/system is created to
# make the maintainer scripts believe it does, and systemctl and
# deb-systemd-invoke are replaced by recorders: the test then sees exactly
# which service actions the scripts ask for (none at install, try-restart at
# upgrade, stop at removal).
set -euo pipefail
cd "$(dirname "$0")/../.."

V1=${1:?usage: check.sh DEBDIR_V1 DEBDIR_V2}
V2=${2:?usage: check.sh DEBDIR_V1 DEBDIR_V2}
PACKAGES=(trustpool-agent trustpool-attestation trustpool-filter-shim)
CONFS=(agent.toml attestation.toml filter-shim.toml)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
INCLUDE=systemd,tpm-udev,python3,adduser
CACHE=${TRUSTPOOL_DEB_CACHE:-$HOME/.cache/trustpool-deb}
BASE=$CACHE/bookworm-minbase-$(echo "$INCLUDE $MIRROR v1" | sha256sum | cut -c1-12)

[[ $(id -u) == 0 ]] || { echo "check.sh: needs root (chroot, mounts)" >&2; exit 1; }
for c in debootstrap lintian systemd-analyze unshare; do
  command -v "$c" > /dev/null || { echo "check.sh: $c is missing (make deps)" >&2; exit 1; }
done

failures=0 checks=0
ok() { checks=$((checks + 1)); echo "ok   $*"; }
fail() { checks=$((checks + 1)) failures=$((failures + 1)); echo "FAIL $*" >&2; }
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

# ------------------------------------------------------------------ lintian

v1_debs=()
for p in "${PACKAGES[@]}"; do
  f=$(compgen -G "$V1/${p}_*.deb" || true)
  [[ -n $f ]] || { echo "check.sh: no $p .deb in $V1" >&2; exit 1; }
  v1_debs+=("$f")
done
lint=$(lintian --fail-on error,warning --display-info --tag-display-limit 0 "${v1_debs[@]}" 2>&1) && rc=0 || rc=$?
summary=$(grep -oE '^[EWIXPO]:' <<< "$lint" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}' || true)
if ((rc == 0)); then
  ok "lintian: no errors, no warnings (tags: ${summary:-none})"
  grep -E '^I: ' <<< "$lint" | sed 's/^/       /' || true
else
  fail "lintian (exit $rc):"
  echo "$lint" >&2
fi

# ------------------------------------------------------------------ the root

if [[ ! -x $BASE/usr/bin/dpkg ]]; then
  echo "building the cached Debian 12 root $BASE (debootstrap --variant=minbase --include=$INCLUDE)"
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.build-XXXXXX")
  if ! debootstrap --variant=minbase --include="$INCLUDE" bookworm "$tmp" "$MIRROR" > "$tmp.log" 2>&1; then
    tail -n 20 "$tmp.log" >&2
    rm -rf "$tmp"
    echo "check.sh: debootstrap failed (log above)" >&2
    exit 1
  fi
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp.log"
  mv "$tmp" "$BASE"
fi

work=$(mktemp -d -t trustpool-debtest-XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "${v1_debs[@]}" "$work/"
mkdir -p "$work/v2"
for p in "${PACKAGES[@]}"; do
  f=$(compgen -G "$V2/${p}_*.deb" || true)
  [[ -n $f ]] || { echo "check.sh: no $p .deb in $V2" >&2; exit 1; }
  cp "$f" "$work/v2/"
done
v1=$(dpkg-deb -f "${v1_debs[0]}" Version)
v2=$(dpkg-deb -f "$(compgen -G "$work/v2/trustpool-agent_*.deb")" Version)
dpkg --compare-versions "$v2" gt "$v1" || { echo "check.sh: $v2 is not newer than $v1" >&2; exit 1; }

# The rest runs in a private mount namespace: the overlay and /proc vanish
# with it. Results come back through $work/results.
export BASE work v1 v2
export PACKAGES_LIST="${PACKAGES[*]}" CONFS_LIST="${CONFS[*]}"
# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --propagation private bash -euo pipefail -c '
R=$work/root
mkdir -p "$R" "$work/upper" "$work/ovwork"
if ! mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$work/upper,workdir=$work/ovwork" "$R" 2>/dev/null; then
  cp -a "$BASE/." "$R/"
fi
mount -t proc proc "$R/proc"
exec "$0" "$R"
' "$(pwd)/tests/packaging/in-root.sh" > "$work/results" 2>&1 || true
while IFS= read -r line; do
  case $line in
    "ok   "*) ok "${line#ok   }" ;;
    "FAIL "*) fail "${line#FAIL }" ;;
    *) echo "     $line" ;;
  esac
done < "$work/results"

if ((checks < 30)); then
  fail "only $checks checks ran (expected at least 30): the in-root part stopped early"
fi
echo "package checks: $checks run, $failures failed"
((failures == 0))
