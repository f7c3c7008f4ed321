"""What sealing a golden image removes and adds, decided without touching a disk.

virt-sysprep removes the identity that lives in well-known files (its operations,
below). What it leaves is decided here: MAC addresses bound in network
configuration (a clone has MACs of its own; a configuration bound to the golden's
would never match), random seeds (clones must not share one), and the first-boot
unit that gives each clone its own hostname, SSH host keys and NIC names from its
domain's SMBIOS OEM strings, so that a clone needs no appliance to become itself.
"""

from __future__ import annotations

import re

from imagebuilder.fixups.network import LINK_DIR, PINNED_PREFIX

# virt-sysprep's operations a golden gets: what identifies the machine, its logs and
# caches. Not `customize` (it writes one random seed for every clone), nor
# `ssh-userdir` or `user-account` (the users' own keys and accounts are what a clone
# should keep), nor `net-nmconn` (it deletes NetworkManager's profiles: their MAC
# bindings are removed here instead).
SYSPREP_OPERATIONS = (
    "abrt-data", "backup-files", "bash-history", "blkid-tab", "crash-data",
    "dhcp-client-state", "dhcp-server-state", "kerberos-hostkeytab", "logfiles",
    "machine-id", "net-hostname", "net-hwaddr", "pacct-log", "package-manager-cache",
    "passwd-backups", "rh-subscription-manager", "rhn-systemid", "smolt-uuid",
    "ssh-hostkeys", "tmp-files", "udev-persistent-net", "utmp", "yum-uuid",
)  # fmt: skip

RANDOM_SEEDS = (
    "/var/lib/systemd/random-seed",
    "/var/lib/urandom/random-seed",
    "/var/lib/random-seed",
)

# Where a Linux guest keeps network configuration that can name a MAC address.
NETWORK_CONFIG = (
    "/etc/network/interfaces",
    "/etc/network/interfaces.d",
    "/etc/netplan",
    "/etc/systemd/network",
    "/etc/NetworkManager/system-connections",
    "/etc/udev/rules.d",
    "/etc/sysconfig/network-scripts",
)

MARKER = "/etc/p2v-golden"  # the seal's record inside the image: name, version
FIRSTBOOT_SCRIPT = "/usr/local/sbin/p2v-firstboot"
FIRSTBOOT_UNIT = "/etc/systemd/system/p2v-firstboot.service"
FIRSTBOOT_WANTS = "/etc/systemd/system/sysinit.target.wants/p2v-firstboot.service"
FIRSTBOOT_DONE = "/var/lib/p2v/identity-done"
OEM_PREFIX = "p2v.identity."  # the SMBIOS OEM strings a clone's domain carries

MAC = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f:])")
_LINE_BINDINGS = (
    # ifupdown, NetworkManager keyfiles, systemd-networkd [Match], netplan, ifcfg
    re.compile(
        r"^\s*(hwaddress|mac-address|cloned-mac-address|MACAddress|macaddress|"
        r"HWADDR|MACADDR)\b.*$",
        re.IGNORECASE,
    ),  # fmt: skip
    re.compile(r"ATTRS?\{address\}"),  # udev rules naming a NIC by its MAC
)


def macs_in(text: str) -> set[str]:
    """The MAC addresses `text` names, lower case with colons."""
    return {m.group(0).lower().replace("-", ":") for m in MAC.finditer(text)}


def unbind(path: str, text: str) -> tuple[str | None, list[str]]:
    """`text` of the network configuration file `path` without its MAC bindings: the
    new text (None: the file goes, a systemd .link that names a NIC by its MAC) and
    what was taken out. Pure."""
    if path.endswith(".link") and re.search(r"^\s*MACAddress\s*=", text, re.MULTILINE):
        return None, [f"{path}: removed (names a NIC by the golden's MAC)"]
    kept, removed = [], []
    for line in text.splitlines(keepends=True):
        if macs_in(line) and any(p.search(line) for p in _LINE_BINDINGS):
            removed.append(f"{path}: {line.strip()}")
        else:
            kept.append(line)
    if not removed:
        return text, []
    out = "".join(kept)
    if path.startswith("/etc/netplan/"):
        out = _netplan_without_empty_match(out)
    return out, removed


def pinned_name(path: str) -> str | None:
    """The NIC name a conversion pinned to its MAC with the .link file `path` (as
    imagebuilder's network fix-up names them), or None for any other file."""
    directory, _, file = path.rpartition("/")
    if directory != LINK_DIR or not file.startswith(PINNED_PREFIX) or not file.endswith(".link"):
        return None
    return file.removeprefix(PINNED_PREFIX).removesuffix(".link")


def pinned_link(nic: str, mac: str) -> tuple[str, str]:
    """The systemd .link file naming the NIC with MAC `mac` `nic`: (path, text), as the
    first-boot script writes it. Pure."""
    return (f"{LINK_DIR}/{PINNED_PREFIX}{nic}.link",
            f"[Match]\nMACAddress={mac}\n\n[Link]\nName={nic}\n")  # fmt: skip


def with_hostname(hosts: str, name: str) -> str:
    """/etc/hosts with its 127.0.1.1 line naming `name`, as the first-boot script makes
    it. Pure."""
    lines = [line for line in hosts.splitlines() if not re.match(r"127\.0\.1\.1\s", line)]
    return "\n".join([*lines, f"127.0.1.1\t{name}"]) + "\n"


def _netplan_without_empty_match(text: str) -> str:
    """A netplan `match:` left empty (it held only the MAC) goes, with the
    `set-name:` beside it: the interface is then matched by its id."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.strip() == "match:":
            indent = len(line) - len(line.lstrip())
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if len(following) - len(following.lstrip()) <= indent or not following.strip():
                continue
        out.append(line)
    if not any(line.strip() == "match:" for line in out):
        out = [line for line in out if not line.strip().startswith("set-name:")]
    return "".join(out)


# ifupdown's stanza of a NIC given a static address (awk, run on the file twice):
# its other settings kept, its gateway too when inside the new network, else the
# network's first address. What personalize.with_address does offline.
IFUPDOWN_ADDRESS_AWK = r"""
function n(s,  p) { split(s, p, "."); return ((p[1] * 256 + p[2]) * 256 + p[3]) * 256 + p[4] }
function q(x) {
	return int(x / 16777216) "." int(x / 65536) % 256 "." int(x / 256) % 256 "." x % 256
}
function stanza() {
	return $0 ~ /^(iface|auto|allow-[^ \t]+|mapping|source|source-directory)([ \t]|$)/
}
BEGIN { split(addr, a, "/"); size = 2 ^ (32 - a[2]); net = int(n(a[1]) / size) * size }
FNR == NR {
	if (stanza()) inside = ($1 == "iface" && $2 == nic && $3 == "inet")
	else if (inside && $1 == "gateway" && gw == "" && int(n($2) / size) * size == net) gw = $2
	next
}
FNR == 1 { if (gw == "") gw = q(net + 1); inside = 0 }
stanza() {
	inside = ($1 == "iface" && $2 == nic && $3 == "inet")
	if (inside) { printf "iface %s inet static\n\taddress %s\n\tgateway %s\n", nic, addr, gw; next }
}
inside && ($1 == "address" || $1 == "netmask" || $1 == "gateway") { next }
{ print }
"""


def firstboot_script() -> str:
    """The script the first-boot unit runs once, in each clone: its identity from the
    domain's SMBIOS OEM strings `p2v.identity.KEY=VALUE` (hostname, nic.NAME=MAC,
    ip=ADDRESS/PREFIX)."""
    return f"""#!/bin/sh
# p2v: gives this clone its own identity at its first boot (hostname, SSH host keys,
# NIC names pinned to its own MACs, its address on its first NIC), from its domain's
# SMBIOS OEM strings {OEM_PREFIX}KEY=VALUE. systemd makes its machine-id: the
# golden's was emptied.
set -eu
oem_strings() {{
	for entry in /sys/firmware/dmi/entries/11-*/raw; do
		[ -e "$entry" ] || continue
		length=$(od -An -tu1 -j1 -N1 "$entry" | tr -d ' ')
		tail -c +$((length + 1)) "$entry" | tr '\\0' '\\n'
	done
}}
strings=$(oem_strings | sed -n 's/^{re.escape(OEM_PREFIX)}//p')
value() {{ printf '%s\\n' "$strings" | sed -n "s/^$1=//p" | head -n 1; }}

name=$(value hostname)
if [ -n "$name" ]; then
	echo "$name" >/etc/hostname
	hostname "$name"
	if grep -q '^127\\.0\\.1\\.1[[:space:]]' /etc/hosts; then
		sed -i "s/^127\\.0\\.1\\.1[[:space:]].*/127.0.1.1\\t$name/" /etc/hosts
	else
		printf '127.0.1.1\\t%s\\n' "$name" >>/etc/hosts
	fi
fi

printf '%s\\n' "$strings" | sed -n 's/^nic\\.\\([^=]*\\)=\\(.*\\)$/\\1 \\2/p' |
	while read -r nic mac; do
		mkdir -p {LINK_DIR}
		printf '[Match]\\nMACAddress=%s\\n\\n[Link]\\nName=%s\\n' "$mac" "$nic" \\
			>"{LINK_DIR}/{PINNED_PREFIX}$nic.link"
	done

address=$(value ip)
first=$(printf '%s\\n' "$strings" | sed -n 's/^nic\\.\\([^=]*\\)=.*$/\\1/p' | head -n 1)
if [ -n "$address" ] && [ -n "$first" ] && [ -f /etc/network/interfaces ]; then
	awk -v nic="$first" -v addr="$address" '{IFUPDOWN_ADDRESS_AWK}' \\
		/etc/network/interfaces /etc/network/interfaces >/etc/network/interfaces.p2v
	mv /etc/network/interfaces.p2v /etc/network/interfaces
fi

if command -v ssh-keygen >/dev/null; then
	ssh-keygen -A
fi
mkdir -p "$(dirname {FIRSTBOOT_DONE})"
: >{FIRSTBOOT_DONE}
"""


def firstboot_unit() -> str:
    """Runs the script once, early: before udev names the NICs, before the network
    and sshd start."""
    return f"""[Unit]
Description=p2v: this clone's own identity (hostname, SSH host keys, NIC names)
DefaultDependencies=no
ConditionPathExists=!{FIRSTBOOT_DONE}
After=systemd-remount-fs.service
Before=systemd-udev-trigger.service network-pre.target ssh.service sshd.service
Before=systemd-networkd.service NetworkManager.service networking.service sysinit.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={FIRSTBOOT_SCRIPT}

[Install]
WantedBy=sysinit.target
"""


def marker(name: str, version: str, sealed: float) -> str:
    return f"name={name}\nversion={version}\nsealed={sealed:.0f}\n"
