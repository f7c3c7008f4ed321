"""Test hosts: several libvirt hosts on this one machine.

Each host is a network namespace with its own address on a private bridge, its own
hostname (UTS namespace) and its own mount namespace, in which /etc/libvirt,
/var/lib/libvirt, /run/libvirt, /var/log/libvirt and /var/cache/libvirt are
directories of its own under STATE. Its own libvirtd (its own host UUID) listens on
qemu+tcp://ADDRESS/system. The bridge has this machine's address on the subnet
before any host starts, so nothing sent to a test host leaves by the default route.
Where KVM does not work on this machine (its probe says so), a host's /dev has no
kvm, so that its libvirt offers only TCG, as a real host without KVM does. The hosts
share one CA: their migration streams (TLS), their backups' NBD exports and p2v's
client certificate are all signed by it.

`up` first removes what an earlier run left of the same hosts; `down` removes the
daemons, their guests, the namespaces, the links, the bridge (with the last host)
and the directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STATE = Path(os.environ.get("P2V_TEST_HOSTS_DIR", "/var/lib/p2v-test-hosts"))
BRIDGE = "p2vbr0"
SUBNET = ipaddress.ip_network("10.253.0.0/24")
GATEWAY = SUBNET[1]  # this machine, on the bridge
HOST_ADDRESSES = range(10, 100)  # the hosts' own; guests use .100-.249
GUEST_BRIDGE = "br0"  # inside each host: its link to the subnet, for its guests
POOL = "default"
POOL_DIR = "/var/lib/libvirt/images"
PRIVATE_DIRS = (
    "etc/libvirt",
    "var/lib/libvirt",
    "run/libvirt",
    "var/log/libvirt",
    "var/cache/libvirt",
)
START_TIMEOUT = 30.0
# libvirt probes QEMU for some seconds on a host's first use and caches what it found:
# the hosts of this machine share that cache, kept between runs.
CAPS_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "p2v/qemu-caps"
CAPS_DIR = "var/cache/libvirt/qemu/capabilities"
# Inside a host: the certificates of its backups' NBD exports (TLS, client verified),
# and of its migration streams (server and client: a host is either end).
SERVER_CERTS = "etc/libvirt/pki/backup"
MIGRATE_CERTS = "etc/libvirt/pki/migrate"
CA_DIR = STATE / "ca"  # the hosts' CA, made with the first host, removed with the last


@dataclass
class TestHost:
    name: str
    address: str
    uuid: str
    link: str  # this machine's end of the host's veth pair
    pid: int = 0  # its libvirtd

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def netns(self) -> str:
        return f"p2vh-{self.name}"

    @property
    def root(self) -> Path:
        return STATE / self.name

    @property
    def client_certs(self) -> Path:
        """The CA and client certificate p2v reads the host's backup exports with."""
        return self.root / "client-tls"

    def line(self) -> str:
        return f"{self.name} {self.uri} {self.address}"


# A directory: each host removed leaves its libvirt logs there.
KEEP_LOGS_ENV = "P2V_TEST_HOST_LOGS"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done


def _in_netns(netns: str, *args: str) -> None:
    _run("ip", "netns", "exec", netns, *args)


def _check_name(name: str) -> None:
    if not name.replace("-", "").isalnum() or len(name) > 20:
        raise ValueError(f"{name!r}: a test host's name is letters, digits and '-', at most 20")


def known() -> list[TestHost]:
    hosts = []
    for record in sorted(STATE.glob("*/host.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            hosts.append(TestHost(**json.loads(record.read_text())))
    return hosts


def _ensure_bridge() -> None:
    # Address first, link up after: the subnet is this bridge's before any host exists.
    if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    if str(GATEWAY) not in _run("ip", "-br", "addr", "show", BRIDGE).stdout:
        _run("ip", "addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")


def _free_slot(taken: set[str]) -> tuple[str, str]:
    """(address, link name) of a host slot no host uses."""
    # `ip -o link` lines: "12: p2vh10@if2: <...>": the name, without its peer.
    lines = _run("ip", "-o", "link", "show").stdout.splitlines()
    links = {line.split(": ")[1].split("@")[0] for line in lines}
    for n in HOST_ADDRESSES:
        address, link = str(SUBNET[n]), f"p2vh{n}"
        if address not in taken and link not in links:
            return address, link
    raise RuntimeError("no free test host address left")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One `up` or `down` at a time on this machine: they share addresses and the bridge."""
    # In /run/lock (emptied at each boot), not beside STATE: `down` leaves nothing there.
    with open(f"/run/lock/p2v-test-hosts-{STATE.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(names: list[str]) -> list[TestHost]:
    """Make the hosts `names` (an earlier one of the same name is removed first)."""
    for name in names:
        _check_name(name)
    with _locked():
        return _up(names)


def _up(names: list[str]) -> list[TestHost]:
    _down(names)
    _ensure_bridge()
    made: list[TestHost] = []
    try:
        for name in names:
            taken = {h.address for h in known()}
            address, link = _free_slot(taken)
            host = TestHost(name, address, str(uuid.uuid4()), link)
            made.append(host)
            _make(host)
    except BaseException:
        _down([h.name for h in made])
        raise
    return made


def _caps_cache() -> Path:
    """Where the hosts' probed capabilities are kept: apart for hosts without KVM."""
    return CAPS_CACHE if _kvm_works() else CAPS_CACHE.with_name(CAPS_CACHE.name + "-no-kvm")


def _kvm_works() -> bool:
    from p2v import accel

    return accel.detect().accel == "kvm"


def _make(host: TestHost) -> None:
    for d in PRIVATE_DIRS:
        (host.root / d).mkdir(parents=True, exist_ok=True)
    (host.root / POOL_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    if _caps_cache().is_dir():
        shutil.copytree(_caps_cache(), host.root / CAPS_DIR)
    _save(host)  # from here on, `down` finds it
    _network(host)
    _configure(host)
    host.pid = _start_daemon(host)
    _save(host)
    _wait_and_pool(host)


def _save(host: TestHost) -> None:
    (host.root / "host.json").write_text(json.dumps(host.__dict__))


def _network(host: TestHost) -> None:
    ns = host.netns
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _run("ip", "link", "set", host.link, "master", BRIDGE, "up")
    _in_netns(ns, "ip", "link", "set", "lo", "up")
    _in_netns(ns, "ip", "link", "add", GUEST_BRIDGE, "type", "bridge")
    _in_netns(ns, "ip", "link", "set", "eth0", "master", GUEST_BRIDGE, "up")
    _in_netns(ns, "ip", "addr", "add", f"{host.address}/{SUBNET.prefixlen}", "dev", GUEST_BRIDGE)
    _in_netns(ns, "ip", "link", "set", GUEST_BRIDGE, "up")
    _forget_old_link(host)


def _forget_old_link(host: TestHost) -> None:
    """An address a removed host had is the new one's: the neighbour entries this
    machine and the other hosts kept for it name the old link's MAC, and would send
    there for a while (connections time out). They are dropped now."""
    _run("ip", "neigh", "flush", "to", host.address, check=False)
    for other in known():
        if other.name != host.name and other.netns in _netns_list():
            _run("ip", "-n", other.netns, "neigh", "flush", "to", host.address, check=False)


def _configure(host: TestHost) -> None:
    etc = host.root / "etc/libvirt"
    # Reachable only from this machine's private bridge; a real host would use TLS or SSH.
    (etc / "libvirtd.conf").write_text(
        "listen_tls = 0\nlisten_tcp = 1\n"
        f'listen_addr = "{host.address}"\nauth_tcp = "none"\n'
        f'host_uuid = "{host.uuid}"\n'
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
    )
    # Guests run as root, logging to files, with no confinement and no /dev of their
    # own (the host's own /dev is one already): the host is a test stand-in. Migration
    # streams go to the host's address, not its hostname.
    (etc / "qemu.conf").write_text(
        'user = "root"\ngroup = "root"\nstdio_handler = "file"\nsecurity_driver = "none"\n'
        "namespaces = []\n"
        f'migration_host = "{host.address}"\n'
        f'backup_tls_x509_cert_dir = "/{SERVER_CERTS}"\nbackup_tls_x509_verify = 1\n'
        f'migrate_tls_x509_cert_dir = "/{MIGRATE_CERTS}"\nmigrate_tls_x509_verify = 1\n'
    )
    _certificates(host)


def _certificates(host: TestHost) -> None:
    """The host's certificates, signed by the hosts' CA: its backup exports' server
    certificate (for its address), its migration streams' server and client ones, and
    the client certificate `host.client_certs` holds for p2v."""
    ca_key, ca = _ca()
    server, client, migrate = (host.root / SERVER_CERTS, host.client_certs,
                               host.root / MIGRATE_CERTS)  # fmt: skip
    served = f"subjectAltName=IP:{host.address}\nextendedKeyUsage=serverAuth"
    for where, role, name, usage in (
        (server, "server", host.address, served),
        (migrate, "server", host.address, served),
        (migrate, "client", host.name, "extendedKeyUsage=clientAuth"),
        (client, "client", "p2v", "extendedKeyUsage=clientAuth"),
    ):
        where.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca, where / "ca-cert.pem")
        key, request, ext = where / f"{role}-key.pem", where / f"{role}.csr", where / f"{role}.ext"
        ext.write_text(
            f"{usage}\nkeyUsage=digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n"
        )
        _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(request), "-subj", f"/CN={name}")  # fmt: skip
        cert = where / f"{role}-cert.pem"
        _run("openssl", "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
        request.unlink()
        ext.unlink()


def _ca() -> tuple[Path, Path]:
    """The hosts' CA (key, certificate), made by the first host (`up` runs one at a time)."""
    key, cert = CA_DIR / "ca-key.pem", CA_DIR / "ca-cert.pem"
    if not cert.exists():
        CA_DIR.mkdir(parents=True, exist_ok=True)
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-keyout", str(key), "-out", str(cert), "-subj", "/CN=p2v test hosts CA")  # fmt: skip
    return key, cert


# A /dev without kvm, for the host's mount namespace: a tmpfs with every node of this
# machine's /dev but kvm (its mounts bound in), moved over /dev.
_NO_KVM = (
    "d=$(mktemp -d /run/p2v-dev.XXXXXX) && mount -t tmpfs -o mode=755 p2v-dev $d && "
    'for f in /dev/* /dev/.[!.]*; do n=${f#/dev/}; [ "$n" = kvm ] && continue; '
    '[ -e "$f" ] || [ -L "$f" ] || continue; '
    'if [ -d "$f" ] && [ ! -L "$f" ] && mountpoint -q "$f"; then '
    "mkdir $d/$n && mount --rbind $f $d/$n; else cp -a $f $d/$n 2>/dev/null || true; fi; "
    "done && mount --move $d /dev && rmdir $d 2>/dev/null; "
)


def _start_daemon(host: TestHost) -> int:
    binds = "".join(f"mount --bind {host.root / d} /{d} && " for d in PRIVATE_DIRS)
    command = "libvirtd --listen -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid"
    hide = "" if _kvm_works() else _NO_KVM
    script = f"hostname {host.name} && {binds}{hide}exec {command}"
    log = open(host.root / "libvirtd.out", "ab")  # noqa: SIM115 - the daemon's own
    with log:
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--uts", "--mount",
             "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    return daemon.pid


def _wait_and_pool(host: TestHost) -> None:
    """Wait for the daemon to answer, then give it its storage pool."""
    from p2v.host import virt

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with virt.connection(host.uri, timeout=5) as conn:
                virt.ensure_dir_pool(conn, POOL, POOL_DIR)
                return
        except Exception as error:
            if not alive(host.pid):
                out = (host.root / "libvirtd.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"test host {host.name}: libvirtd stopped: {out}") from error
            if time.monotonic() > deadline:
                why = f"libvirtd does not answer: {error}"
                raise RuntimeError(f"test host {host.name}: {why}") from None
            time.sleep(0.2)


def qemu_pid(host: TestHost, vm: str) -> int | None:
    """The PID of the QEMU that runs `vm` on the host (incoming migrations too)."""
    pidfile = host.root / "run" / "libvirt" / "qemu" / f"{vm}.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    """The process runs (a zombie does not: only its parent has yet to collect it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def down(names: list[str] | None = None) -> list[str]:
    """Remove the hosts `names` (all when None); returns the names removed."""
    with _locked():
        return _down(names)


def _down(names: list[str] | None) -> list[str]:
    hosts = known()
    if names is not None:
        hosts = [h for h in hosts if h.name in names]
        # Left by a run that died before writing host.json: namespace or directory only.
        stray = set(names) - {h.name for h in hosts}
        hosts += [TestHost(n, "", "", "") for n in stray if _leftover(n)]
    for host in hosts:
        _remove(host)
    if not known():
        _run("ip", "link", "del", BRIDGE, check=False)
        shutil.rmtree(CA_DIR, ignore_errors=True)
        with contextlib.suppress(OSError):
            STATE.rmdir()
    return [h.name for h in hosts]


def _leftover(name: str) -> bool:
    return (STATE / name).exists() or f"p2vh-{name}" in _netns_list()


def _netns_list() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines() if line]


def _remove(host: TestHost) -> None:
    # Every process in the namespace: the daemon and the guests it started.
    if host.netns in _netns_list():
        pids = _run("ip", "netns", "pids", host.netns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _wait_gone([int(p) for p in pids])
        _run("ip", "netns", "del", host.netns, check=False)
    if host.link:
        _run("ip", "link", "del", host.link, check=False)
    if host.address:
        # The address may come back with another link: forget the old one's MAC.
        _run("ip", "neigh", "flush", "to", host.address, check=False)
    probed, cache = host.root / CAPS_DIR, _caps_cache()
    if not cache.is_dir() and any(probed.glob("*.xml")):
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(probed, cache)
    if (keep := os.environ.get(KEEP_LOGS_ENV)) and (host.root / "var/log/libvirt").is_dir():
        # libvirtd's and its guests' logs, for a failure seen only later (in CI).
        kept = Path(keep) / f"{host.name}-{time.strftime('%H%M%S')}"
        shutil.copytree(host.root / "var/log/libvirt", kept, dirs_exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy2(host.root / "libvirtd.out", kept / "libvirtd.out")
    shutil.rmtree(host.root, ignore_errors=True)


def _wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def running(names: list[str]) -> Iterator[list[TestHost]]:
    """The hosts `names`, up for the time of the block."""
    hosts = up(names)
    try:
        yield hosts
    finally:
        down(names)
