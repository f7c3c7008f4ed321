#!/usr/bin/env bash
# make fresh-check: proves `make setup` on a brand-new Debian 12.
#
# A machine that has run the set-up before keeps what it installed, so it can hide a
# missing or conflicting install step. This builds a new Debian 12 chroot with
# mmdebstrap (minbase plus what a new machine of ours ships: systemd, Python, gcc,
# make, git), unpacks the committed tree into it (git archive, not the working
# directory), runs `make setup` there for real, runs it again to show it is
# idempotent, and checks what the toolkit needs answers from the new .venv.
#
# It reaches the package mirrors through this machine's own apt sources and Acquire
# settings and its pip settings, shares this machine's apt download cache, starts no
# daemon (policy-rc.d refuses), and runs in its own mount and PID namespaces, so no
# mount or process can outlive it. The chroot is always new and deleted afterwards.
#
#   scripts/fresh-check.sh [REV]      REV defaults to HEAD
#   FRESH_CHECK_KEEP=1                keep the chroot (build/fresh-check/root)
#   FRESH_CHECK_APT_CACHE=DIR         share DIR as the apt cache instead of this machine's
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
work=$here/build/fresh-check
root=$work/root
started=$SECONDS

log() { printf 'fresh-check: %s\n' "$*"; }
fail() {
  log "$*"
  exit 1
}
elapsed() { printf '%dm%02ds' $(((SECONDS - $1) / 60)) $(((SECONDS - $1) % 60)); }

# What a new machine of ours ships beyond minbase, and that the set-up touches.
base_pkgs=systemd,python3,python3-venv,python3-dev,gcc,make,git,ca-certificates

# --- inside mmdebstrap's customize hook: $2 is the chroot ----------------------------

in_chroot() {
  # A clean environment, with this machine's pip settings and proxies.
  local -a env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
  local var
  for var in $(compgen -e); do
    case $var in PIP_* | http_proxy | https_proxy | no_proxy | HTTP_PROXY | HTTPS_PROXY | NO_PROXY)
      env+=("$var=${!var}") ;;
    esac
  done
  chroot "$chroot" "${env[@]}" "$@"
}

apt_error() {
  # Why apt gave up, in one line: its unmet dependencies, else its own error.
  local unmet
  unmet=$(grep -E '^ *[^ ]+ : (Depends|Pre-Depends|Conflicts|Breaks): ' "$1" |
    sed -E 's/^ +//' | paste -sd';' | sed 's/;/; /g')
  [ -n "$unmet" ] && echo "$unmet" && return
  grep -m1 -E '^E: ' "$1" || grep -v '^make' "$1" | tail -n1
}

hook() {
  chroot=$1
  # mmdebstrap logs a hook's output with its own; fd 3 is the terminal's.
  if { true >&3; } 2>/dev/null; then exec >&3; fi
  [ "$(cat "$chroot/usr/sbin/policy-rc.d" 2>/dev/null)" = $'#!/bin/sh\nexit 101' ] ||
    printf '#!/bin/sh\nexit 101\n' >"$chroot/usr/sbin/policy-rc.d"
  chmod 755 "$chroot/usr/sbin/policy-rc.d"
  for conf in /etc/pip.conf /etc/xdg/pip; do
    [ -e "$conf" ] && mkdir -p "$chroot$(dirname "$conf")" && cp -a "$conf" "$chroot$conf"
  done
  # The CA bundle pip is told to trust here may hold more than Debian's (a proxy's).
  local cert=${PIP_CERT:-$(sed -n 's/^ *cert *= *//p' /etc/pip.conf /etc/xdg/pip/pip.conf \
    ~/.config/pip/pip.conf 2>/dev/null | tail -n1)}
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    mkdir -p "$chroot/etc/fresh-check"
    cp "$cert" "$chroot/etc/fresh-check/pip-ca.crt"
    export PIP_CERT=/etc/fresh-check/pip-ca.crt
  fi
  # Downloads are shared with this machine's apt cache; the chroot stays new.
  local cache=${FRESH_CHECK_APT_CACHE:-/var/cache/apt/archives}
  mkdir -p "$cache/partial"
  mount --bind "$cache" "$chroot/var/cache/apt/archives"

  local t=$SECONDS
  log "make setup (first run, as on a new machine)"
  if ! in_chroot make -C /root/p2v setup >"$work/setup.log" 2>&1; then
    log "make setup failed after $(elapsed "$t"): $(apt_error "$work/setup.log")"
    log "full log: $work/setup.log"
    return 1
  fi
  log "make setup passed in $(elapsed "$t")"

  t=$SECONDS
  in_chroot make -C /root/p2v setup >"$work/setup-again.log" 2>&1 ||
    { log "make setup failed on its second run: $(tail -n1 "$work/setup-again.log")"; return 1; }
  grep -q 'Debian packages: all present' "$work/setup-again.log" ||
    { log "the second make setup installed packages again: $work/setup-again.log"; return 1; }
  log "make setup again: nothing to do, $((SECONDS - t)) s"

  umount "$chroot/var/cache/apt/archives"
  in_chroot bash -euo pipefail -c "$(declare -f check_toolkit); check_toolkit" |
    sed 's/^/fresh-check:   /'
}

check_toolkit() {
  # Runs in the chroot: what the toolkit needs, from the new .venv.
  cd /root/p2v
  qemu=$(qemu-system-x86_64 --version | head -n1)
  echo "$qemu"
  [[ $qemu =~ version\ 10\. ]] || { echo "QEMU is not 10.x"; exit 1; }
  libvirtd --version
  [[ $(libvirtd --version) =~ \ 11\. ]] || { echo "libvirt is not 11.x"; exit 1; }
  .venv/bin/python - <<'PY'
import guestfs, libvirt, nbd, parted, pyudev, tqdm
major, minor = divmod(libvirt.getVersion() // 1000, 1000)
print(f"python: libvirt {major}.{minor} library, guestfs, nbd, parted, pyudev, tqdm import")
assert major == 11, "libvirt's Python binding does not load libvirt 11"
PY
  .venv/bin/p2v --help >/dev/null
  echo "p2v --help answers"
}

if [ "${1:-}" = hook ]; then
  hook "$2"
  exit
fi

# --- on this machine -----------------------------------------------------------------

rev=${1:-HEAD}
[ "$(id -u)" = 0 ] || fail "needs root: it builds a chroot and installs packages in it"
commit=$(git -C "$here" rev-parse --verify "$rev^{commit}") || fail "no such revision: $rev"

if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap \
    >/dev/null 2>&1 || {
    apt-get update >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap \
        >/dev/null
  } || fail "cannot install mmdebstrap"
fi

[ ! -e "$root" ] || rm -rf --one-file-system "$root"
mkdir -p "$work"
rm -f "$work"/*.log
git -C "$here" archive --format=tar --prefix=p2v/ "$commit" >"$work/tree.tar"

# This machine's Debian mirrors for bookworm and its updates (backports is the
# set-up's job), and the Acquire settings that reach them (proxies, date checks).
apt-get indextargets --format '$(REPO_URI) $(RELEASE)' |
  awk '$2 ~ /^bookworm(-updates|-security)?$/ { print "deb " $1 " " $2 " main" }' |
  sort -u >"$work/sources.list"
[ -s "$work/sources.list" ] || fail "this machine's apt knows no bookworm mirror (run apt-get update)"
apt-config dump Acquire |
  grep -E '^Acquire::((https?|ftp)::[^ ]+|Check-Valid-Until|Check-Date|Retries) "[^"]+";$' \
    >"$work/apt.conf" || true

log "building a Debian 12 chroot (minbase + $base_pkgs) for ${commit:0:12}"
status=0
unshare --mount --propagation private --pid --fork --kill-child --mount-proc \
  mmdebstrap --mode=root --variant=minbase --format=directory \
  --include="$base_pkgs" --aptopt="$work/apt.conf" \
  --customize-hook="tar-in $work/tree.tar /root" \
  --customize-hook="$here/scripts/fresh-check.sh hook \"\$1\"" \
  bookworm "$root" "$work/sources.list" 3>&1 2>"$work/mmdebstrap.log" || status=$?

# The namespaces are gone with mmdebstrap; prove nothing of the chroot is left.
leftover_mounts=$(awk -v r="$root" 'index($5, r) == 1 { print $5 }' /proc/self/mountinfo)
leftover_procs=$(find /proc -maxdepth 2 -name root -lname "$root*" 2>/dev/null || true)
[ -z "$leftover_mounts" ] || fail "mounts left behind: $leftover_mounts"
[ -z "$leftover_procs" ] || fail "processes left behind: $leftover_procs"
[ -n "${FRESH_CHECK_KEEP:-}" ] || rm -rf --one-file-system "$root"

if [ "$status" != 0 ]; then
  [ -s "$work/setup.log" ] || log "mmdebstrap failed: $(grep -m1 -E '^E: ' "$work/mmdebstrap.log" ||
    tail -n1 "$work/mmdebstrap.log")"
  fail "FAILED for ${commit:0:12} after $(elapsed "$started") (logs in $work)"
fi
log "passed for ${commit:0:12} in $(elapsed "$started"); no mount or process left behind"
