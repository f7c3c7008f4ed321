#!/usr/bin/env bash
# Installs what the toolkit and its tests need on a Debian 12 host, then makes .venv.
# Idempotent: when nothing is missing it only checks, which takes seconds.
set -Eeuo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
stamp_dir="$venv/.p2v-setup"

# QEMU comes from bookworm-backports (10.x): bookworm's 7.2 corrupts guest memory
# during pre-copy migration under TCG. libvirt too (11.x): 9.0 cannot revert external
# snapshots with memory. Debian's python3-libvirt 9.0 binding runs on the 11.x library.
# These are the roots of the backports set; what they drag along is found by apt.
backports_roots=(
  qemu-system-x86 qemu-utils qemu-block-extra
  libvirt0 libvirt-clients libvirt-daemon libvirt-daemon-system
  libvirt-daemon-driver-qemu libvirt-daemon-driver-storage
  # tests: reads and writes UEFI variable stores (boot entries); only backports has it
  python3-virt-firmware
  # tests: the test guest carries the guest agent (a backup freezes its filesystem)
  qemu-guest-agent
)
pins=/etc/apt/preferences.d/p2v-bookworm-backports

debian_pkgs=(
  # libguestfs, with a kernel for its appliance
  libguestfs-tools python3-guestfs linux-image-amd64
  # libvirt's Python binding (the daemons are backports, above); test hosts' networks
  python3-libvirt libxml2-utils iproute2
  # NBD
  libnbd-bin python3-libnbd nbdkit
  # firmware and disk tools
  ovmf seabios debootstrap parted gdisk dosfstools e2fsprogs lvm2 mdadm kpartx
  dmidecode pciutils ethtool util-linux
  # tests: relays a guest's connection to a host port (QEMU guestfwd); LUKS volumes
  socat cryptsetup-bin
  # benchmarks: the peer tools measured against
  virt-v2v virtnbdbackup virtinst
  # ISO pieces
  mmdebstrap xorriso mtools grub-pc-bin grub-efi-amd64-bin grub-common
  cpio zstd
  # process migration reaches its servers over SSH (OpenSSH's client, ssh-keygen)
  openssh-client
  # the test guest: its userland, its static program (libc6-dev), its boot loader
  busybox-static libc6-dev extlinux
  # the virtual environment and pyparted's build
  python3-venv python3-dev libparted-dev pkg-config gcc
)

log() { printf 'setup: %s\n' "$*"; }

apt_log=$(mktemp /tmp/p2v-setup.XXXXXX)
trap 'rm -f "$apt_log"' EXIT
trap 'log "failed (line $LINENO): $BASH_COMMAND"' ERR

quiet_apt() {
  # apt's chatter goes to a log, shown only when it fails.
  if ! apt-get "$@" >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    log "apt-get $* failed"
    exit 1
  fi
}

missing_pkgs() {
  # Prints the packages of "$@" that dpkg does not list as installed.
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

debian_mirror() {
  # The mirror apt already uses for bookworm; the backports suite lives beside it.
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null \
    | awk '$2 == "bookworm" { print $1; exit }'
}

ensure_backports_source() {
  local list=/etc/apt/sources.list.d/p2v-bookworm-backports.sources
  if apt-get indextargets --format '$(RELEASE)' 2>/dev/null | grep -qx bookworm-backports; then
    return 0
  fi
  local mirror
  mirror=$(debian_mirror)
  if [ -z "$mirror" ]; then
    quiet_apt update
    mirror=$(debian_mirror)
  fi
  [ -n "$mirror" ] || { log "cannot find the Debian mirror apt uses for bookworm"; exit 1; }
  log "adding bookworm-backports from $mirror"
  cat >"$list" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

is_backport() {
  local v
  v=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true)
  [[ "$v" == *bpo* ]]
}

installed_backport_sources() {
  # Source packages with a binary installed from backports (by an earlier set-up, or
  # by hand): they stay pinned, so their other binaries can only come from there too.
  dpkg-query -W -f='${db:Status-Abbrev} ${Version} ${source:Package}\n' 2>/dev/null |
    awk '$1 == "ii" && $2 ~ /~bpo[0-9]/ { print $3 }'
}

dragged_backport_sources() {
  # Source packages of everything the roots would take from backports, as apt's
  # resolver decides it (a simulated install with backports as the target release).
  local sim
  sim=$(apt-get install -s -y --no-install-recommends -t bookworm-backports \
    "${backports_roots[@]}" 2>&1) || {
    printf '%s\n' "$sim" >&2
    log "apt cannot resolve QEMU and libvirt from bookworm-backports"
    exit 1
  }
  printf '%s\n' "$sim" |
    awk '$1 == "Inst" && /-backports \[/ {
      v = $0; sub(/^[^(]*\(/, "", v); split(v, f, " "); print $2 "=" f[1] }' |
    xargs -r apt-cache show --no-all-versions 2>/dev/null |
    awk '/^Package: / { src = $2 } /^Source: / { src = $2 } /^$/ && src { print src; src = "" }
         END { if (src) print src }'
}

write_pins() {
  # One preferences file pins whole source packages to bookworm-backports: apt then
  # takes QEMU, libvirt and every library they need from one suite in one resolver
  # run, and a binary like libudev-dev follows its libudev1. The set only grows.
  local have want
  have=$({ cat "$pins" 2>/dev/null || true; } | sed -n 's/^Package: //p' | tr ' ' '\n' |
    sed -n 's/^src://p')
  want=$(printf '%s\n' $have "$@" | sed '/^$/d' | sort -u)
  [ "$want" = "$(printf '%s\n' $have | sort -u)" ] && [ -f "$pins" ] && return 0
  log "pinning to bookworm-backports: $(echo $want)"
  cat >"$pins.new" <<PIN
# Written by p2v-toolkit's scripts/setup-host.sh: QEMU 10 and libvirt 11 come from
# bookworm-backports, with every source package they need from there, whole.
Package: $(printf 'src:%s ' $want | sed 's/ $//')
Pin: release n=bookworm-backports
Pin-Priority: 990
PIN
  mv "$pins.new" "$pins"
}

install_packages() {
  local need
  need=$(missing_pkgs "${backports_roots[@]}" "${debian_pkgs[@]}")
  is_backport qemu-system-x86 && is_backport libvirt-daemon ||
    need=$(printf '%s\n' $need "${backports_roots[@]}" | sort -u)
  if [ -z "$need" ]; then
    # A machine set up before the pins existed gets them, for its next apt-get.
    [ "$(id -u)" != 0 ] || write_pins $(installed_backport_sources)
    log "Debian packages: all present"
    return 0
  fi
  [ "$(id -u)" = 0 ] || { log "missing packages: $(echo $need); run as root"; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  ensure_backports_source
  quiet_apt update
  write_pins qemu libvirt $(dragged_backport_sources) $(installed_backport_sources)
  log "installing: $(echo $need)"
  # One resolver run for everything, so no step meets a version another one changed.
  # shellcheck disable=SC2086
  quiet_apt install -y --no-install-recommends $need
  is_backport qemu-system-x86 && is_backport libvirt-daemon ||
    { log "QEMU and libvirt did not come from bookworm-backports"; exit 1; }
}

make_venv() {
  local recipe_hash
  recipe_hash=$(cat "$here/pyproject.toml" "$0" | sha256sum | cut -c1-16)
  if [ -f "$stamp_dir/$recipe_hash" ] && [ -x "$venv/bin/p2v" ]; then
    log "virtual environment: up to date"
    return 0
  fi
  log "creating $venv"
  # Debian's python3: the libguestfs, libvirt and libnbd bindings are Debian packages.
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check -e "$here[test]" >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    log "pip could not install the project into $venv"
    exit 1
  fi
  rm -rf "$stamp_dir"
  mkdir -p "$stamp_dir"
  touch "$stamp_dir/$recipe_hash"
}

install_packages
make_venv
log "done"
