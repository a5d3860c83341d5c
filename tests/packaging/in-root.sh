#!/usr/bin/env bash
# The install/upgrade/remove/purge checks of tests/packaging/check.sh, run in
# its private mount namespace with the throwaway root as $1. Prints one
# "ok ..." or "FAIL ..." line per check; check.sh counts them.
set -uo pipefail

R=${1:?root}
: "${work:?}" "${v1:?}" "${v2:?}" "${PACKAGES_LIST:?}" "${CONFS_LIST:?}" # from check.sh
read -r -a PACKAGES <<< "$PACKAGES_LIST"
read -r -a CONFS <<< "$CONFS_LIST"
in_root() { chroot "$R" "$@"; }
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; }
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

# Pretend systemd runs, and record what the maintainer scripts ask of it.
mkdir -p "$R/run/systemd/system"
for tool in systemctl deb-systemd-invoke; do
  cat > "$R/usr/bin/$tool" <<EOF
#!/bin/sh
echo "$tool \$*" >> /var/log/trustpool-calls
EOF
  chmod 755 "$R/usr/bin/$tool"
done
calls() { cat "$R/var/log/trustpool-calls" 2> /dev/null; }
reset_calls() { rm -f "$R/var/log/trustpool-calls"; }

# A listing of the root (path, type, mode, owner) to compare after purge.
snapshot() {
  (cd "$R" && find . -xdev \( -path ./proc -o -path ./var/lib/dpkg -o -path ./var/log -o -path ./var/cache \
    -o -path ./tmp -o -path ./run \) -prune -o -printf '%p %y %m %U:%G\n' | sort)
}
before=$(snapshot)

stat_is() { # stat_is PATH "MODE USER:GROUP"
  [[ $(in_root stat -c '%a %U:%G' "$1" 2> /dev/null) == "$2" ]]
}
oneline() { tr '\n' ' ' <<< "$1"; }
# shellcheck disable=SC2016 # dpkg-query's format, not shell
status_of() { in_root dpkg-query -W -f '${db:Status-Abbrev} ${Version}' "$1" 2> /dev/null; }

# ------------------------------------------------------------------ install
mkdir -p "$R/tmp/debs"
cp "$work"/*.deb "$R/tmp/debs/"
cp -r "$work/v2" "$R/tmp/debs/v2"
reset_calls
if out=$(in_root sh -c 'dpkg -i /tmp/debs/*.deb' 2>&1); then
  ok "install $v1: dpkg -i of ${PACKAGES[*]} (dependencies all from the base root)"
else
  fail "install $v1: dpkg -i failed:"
  echo "$out"
  exit 0
fi
for p in "${PACKAGES[@]}"; do
  check "$p $v1 is installed" [ "$(status_of "$p")" == "ii  $v1" ]
done
check "system user trustpool exists (system uid, no login shell)" \
  bash -c "in_root() { chroot '$R' \"\$@\"; }; e=\$(in_root getent passwd trustpool) && IFS=: read -r _ _ uid _ _ home shell <<< \"\$e\" && ((uid < 1000)) && [[ \$shell == /usr/sbin/nologin && \$home == /var/lib/trustpool ]]"
for c in "${CONFS[@]}"; do
  check "/etc/trustpool/$c is root:trustpool 0640 (dpkg-statoverride)" stat_is "/etc/trustpool/$c" "640 root:trustpool"
done
check "all three configurations are conffiles" \
  bash -c "[[ \$(chroot '$R' dpkg-query -W -f '\${Conffiles}\n' ${PACKAGES[*]} | grep -c '/etc/trustpool/.*\.toml') == 3 ]]"
check "/var/lib/trustpool is trustpool 0700 (tmpfiles.d)" stat_is /var/lib/trustpool "700 trustpool:trustpool"
check "/var/lib/trustpool/agent is trustpool 0700 (tmpfiles.d)" stat_is /var/lib/trustpool/agent "700 trustpool:trustpool"
units=()
for p in "${PACKAGES[@]}"; do units+=("$p.service"); done
out=$(in_root systemd-analyze verify --man=no "${units[@]}" 2>&1)
check "systemd-analyze verify of the installed units reports nothing${out:+: $out}" [ -z "$out" ]
out=$(calls)
check "install asked systemd for nothing but daemon-reload (got: $(oneline "$out"))" \
  bash -c "[[ -n '$out' ]] && ! grep -v '^systemctl --system daemon-reload$' <<< '$out'"
check "install enabled no service" bash -c "! compgen -G '$R/etc/systemd/system/*.wants/trustpool-*'"
for p in "${PACKAGES[@]}"; do
  check "$p -version says $v1" bash -c "chroot '$R' $p -version | grep -q '^$p $v1 '"
done
for i in "${!PACKAGES[@]}"; do
  p=${PACKAGES[i]}
  check "$p -check-config accepts the shipped /etc/trustpool/${CONFS[i]}" \
    bash -c "chroot '$R' $p -check-config > /dev/null"
done
check "the Nova filter's entry points are visible to Debian's python3" \
  bash -c "chroot '$R' python3 -c 'import importlib.metadata as m; import sys; sys.exit(0 if any(e.value == \"trustpool_filter.extra_specs\" for e in m.entry_points(group=\"nova.api.extra_spec_validators\")) else 1)'"
check "man pages are installed" bash -c "ls '$R'/usr/share/man/man8/trustpool-{agent,attestation,filter-shim}.8.gz > /dev/null"

# ------------------------------------------------------------------ upgrade
echo "# operator edit" >> "$R/etc/trustpool/agent.toml"
echo "ak" > "$R/var/lib/trustpool/agent/ak.blob"
echo "db" > "$R/var/lib/trustpool/attestation.db"
echo "key" > "$R/var/lib/trustpool/verdict-signing.key"
reset_calls
if out=$(in_root sh -c 'dpkg -i /tmp/debs/v2/*.deb' 2>&1); then
  ok "upgrade to $v2: dpkg -i"
else
  fail "upgrade to $v2 failed:"
  echo "$out"
  exit 0
fi
for p in "${PACKAGES[@]}"; do
  check "$p is $v2 after the upgrade" [ "$(status_of "$p")" == "ii  $v2" ]
done
check "trustpool-agent -version says $v2" bash -c "chroot '$R' trustpool-agent -version | grep -q ' $v2 '"
check "the operator's edit of agent.toml survived the upgrade" grep -q '^# operator edit$' "$R/etc/trustpool/agent.toml"
check "agent.toml is still root:trustpool 0640" stat_is /etc/trustpool/agent.toml "640 root:trustpool"
check "the state survived the upgrade (AK, database, signing key)" \
  bash -c "[[ -s '$R/var/lib/trustpool/agent/ak.blob' && -s '$R/var/lib/trustpool/attestation.db' && -s '$R/var/lib/trustpool/verdict-signing.key' ]]"
out=$(calls)
for p in "${PACKAGES[@]}"; do
  check "upgrade asked for try-restart of $p.service (restarts it only if running)" \
    grep -qx "deb-systemd-invoke try-restart $p.service" <<< "$out"
done
check "upgrade started or enabled nothing (got: $(oneline "$out"))" \
  bash -c "! grep -Ev '^(systemctl --system daemon-reload|deb-systemd-invoke try-restart trustpool-[a-z-]+\.service)$' <<< '$out'"

# ------------------------------------------------------------------ remove
reset_calls
if out=$(in_root dpkg -r "${PACKAGES[@]}" 2>&1); then ok "remove: dpkg -r"; else fail "remove failed: $out"; fi
out=$(calls)
for p in "${PACKAGES[@]}"; do
  check "remove stopped $p.service" grep -qx "deb-systemd-invoke stop $p.service" <<< "$out"
  check "$p is removed, its conffile kept (rc)" [ "$(status_of "$p")" == "rc  $v2" ]
  check "/usr/bin/$p is gone" [ ! -e "$R/usr/bin/$p" ]
done
check "the configuration is kept after remove" [ -f "$R/etc/trustpool/agent.toml" ]

# ------------------------------------------------------------------ purge
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -s /lib/systemd/system/trustpool-agent.service "$R/etc/systemd/system/multi-user.target.wants/"
if out=$(in_root dpkg -P "${PACKAGES[@]}" 2>&1); then ok "purge: dpkg -P"; else fail "purge failed: $out"; fi
for p in "${PACKAGES[@]}"; do
  check "$p is gone from dpkg's database" [ -z "$(status_of "$p")" ]
done
check "no dpkg-statoverride is left" bash -c "! chroot '$R' dpkg-statoverride --list | grep -q trustpool"
after=$(snapshot)
extra=$(comm -13 <(echo "$before") <(echo "$after") | grep -Ev '^\./etc/(passwd|group|shadow|gshadow)-? ' || true)
check "purge left nothing behind but the trustpool user${extra:+; left: $(oneline "$extra")}" [ -z "$extra" ]
check "the trustpool user stays after purge (Debian policy for system users)" bash -c "chroot '$R' getent passwd trustpool > /dev/null"
