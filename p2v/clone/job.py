"""`p2v clone GOLDEN --name web-{n} --count N -c URI...` as one job with one child job
per clone, on the step runner.

Before anything is made, everything that would be refused is: a golden not sealed
(unless --personalize none) or gone, a clone name any target host has already, an
address pool too small, a host without room for its share. The plan (each clone's
name, host, UUID, MACs and address) is recorded with the job, so a resume makes
exactly these clones.

Steps: for a VM (capture.py), first `capture` (its disk taken at one instant, with
--live while it runs on) and `seal` (a child golden job; not with --personalize
none); then `base URI` per host (linked clones: the golden copied once into the host's
pool by a child copy job, read back and checked, then made durable and read-only
as GOLDEN-vVERSION-DIGEST.qcow2 by the host itself; a later clone job reuses it),
with --personalize offline `personalize` (every clone's overlay made here, its
identity written in batched appliances: clone/personalize.py), `clone NAME` per
clone (a child job: `disk`, a qcow2 overlay over the base, the one personalized here
uploaded, or with --full a copy of the base made by the host; then `define`, the
domain with the clone's identity in its SMBIOS table), `start` (with --start: in
waves), and after an offline personalization `clean up`. After a crash
`p2v clone --resume JOB` goes on: a clone whose child finished is left, one cut
short is finished (its disk, if this job made it, made again), one not begun is
made; so there are exactly N, none twice.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2v import accel, qemu
from p2v.clone import batch, capture, personalize
from p2v.clone import golden as goldens
from p2v.clone import plan as planning
from p2v.clone.domain import Shape, clone_xml
from p2v.errors import InputError
from p2v.host import virt
from p2v.host.virt import domains, storage
from p2v.jobs.journal import Journal, Lock
from p2v.jobs.runner import Kind, Run, Step
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT, jobs
from p2v.transfer.endpoints import export as export_nbd
from p2v.transfer.endpoints.export import DEFAULT_NBD_PORT
from p2v.transfer.endpoints.volume import VolumeSpec
from p2v.transfer.progress import Reporter
from p2v.units import format_size

Say = Callable[[str], None]
OVERLAY_ROOM = 1 << 20  # what a new overlay takes before its clone writes
WAVE_GAP = 20.0  # seconds between two waves of starts
# Offline personalization's overlays, until uploaded: kept across a reboot for a
# resume, and private (they hold the clones' SSH host keys).
SCRATCH_ROOT = "/var/tmp"


@dataclass(frozen=True)
class Request:
    source: str  # a golden's name (its newest version), an image path, or a VM's name
    pattern: str  # web-{n}
    count: int
    uris: list[str]
    full: bool = False  # independent copies instead of overlays over a shared base
    personalize: str = "first-boot"  # first-boot, offline or none
    policy: str = "round-robin"  # or memory
    ip_pool: str | None = None
    memory_mib: int | None = None  # None: the source VM's, else 1024
    vcpus: int | None = None  # None: the source VM's, else 1
    network: str = "network:default"
    pool: str = "default"
    start: bool = False
    wave: int = 10
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    seed: int | None = None  # the identities' random source (tests); None: the system's
    live: bool = False  # a running VM's disk taken at one instant (capture.py)
    source_uri: str | None = None  # the VM's host; None: one of `uris`
    tls_certs: str | None = None  # to read a running VM's disk from another host
    nbd_port: int = DEFAULT_NBD_PORT

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    r = params.get("request", {})
    kind = "full" if r.get("full") else "linked"
    name = (params.get("golden") or params.get("vm") or {}).get("name")
    return (f"{r.get('count')} {kind} clones {r.get('pattern')} of {name} on "
            f"{', '.join(r.get('uris', []))}")  # fmt: skip


def _outcome(result: dict[str, Any]) -> str | None:
    made = result.get("clones")
    return f"{len(made)} clones defined" if made else None


KIND = Kind("clone", _describe, _outcome)


def _one_describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    identity = params.get("identity", {})
    return f"clone {identity.get('name')} on {identity.get('uri')}"


CLONE_VM = Kind("clone-vm", _one_describe, lambda r: r.get("uuid"), resumable=False)


@dataclass
class Target:
    """One host's part of the bulk clone."""

    uri: str
    identity: str  # the host's UUID
    base_needed: bool
    room: int
    plan_host: planning.Host


def run(
    request: Request, journal: Journal, say: Say, reporter: Reporter
) -> tuple[str, dict[str, Any]]:
    """Check and plan the bulk clone, record it, and make it: (job id, its record)."""
    if request.personalize == "offline" and request.full:
        raise InputError("--personalize offline writes linked clones' overlays: with --full "
                         "use first-boot")  # fmt: skip
    golden = _golden(request, journal)
    vm = None
    if golden is None:  # a VM: its golden is made by the job (capture.py)
        where = [request.source_uri] if request.source_uri else request.uris
        vm = capture.find(request.source, where, request.live, request.connect_timeout)
        if vm is None:
            raise InputError(f"{request.source}: no golden of that name (`p2v golden list`), "
                             f"no such image file, and no VM of that name on "
                             f"{', '.join(where)}")  # fmt: skip
        capture.check_room(vm)
        if vm.running:
            export_nbd.check_reach(vm.uri, request.tls_certs, f"a live clone of {vm.name}")
        golden_bytes, nics = vm.allocation, vm.nics
    else:
        if request.live or request.source_uri:
            raise InputError(f"{request.source} is a golden or an image: --live and --from "
                             "are for a VM")  # fmt: skip
        check_offline(request, golden)
        golden_bytes = os.path.getsize(golden["path"])
        nics = len(golden.get("nic_names") or [])
    # Unless given: the VM's memory and vCPUs, or 1 GiB and one.
    request = dataclasses.replace(
        request, memory_mib=request.memory_mib or (vm.memory_mib if vm else 1024),
        vcpus=request.vcpus or (vm.vcpus if vm else 1),
    )  # fmt: skip
    names = planning.names(request.pattern, request.count)
    targets = _targets(request, base_name(golden) if golden else None)
    hosts = [t.plan_host for t in targets]
    problems = [f"a domain named {c} exists already" for c in planning.collisions(names, hosts)]
    if problems:
        raise InputError("; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
    memory = (request.memory_mib or 0) << 20 if request.start else 0
    uris = planning.spread(names, hosts, memory, request.policy)
    _check_room(request, golden_bytes, targets, uris)
    ips = planning.addresses(request.ip_pool, request.count, set())
    rng = random.Random(request.seed) if request.seed is not None else random.SystemRandom()
    made = planning.make(names, uris, hosts, max(1, nics), ips, rng)
    locks = [_names_lock(t.identity, t.uri, request.pattern) for t in targets]
    if vm:
        locks.append(vm.lock())
    for lock in locks:
        journal.refuse_held(lock)
    params = {"request": request.to_json(), "golden": golden,
              "vm": vm.to_json() if vm else None, "plan": made.to_json(),
              "domain_type": accel.detect().libvirt_domain_type}  # fmt: skip
    job = Run.start(KIND, params, journal, say)
    say(f"job {job.job_id} (`p2v show {job.job_id}` shows its steps)")
    return job.job_id, job.execute(lambda: _steps(job, locks, reporter))


def resume(
    job_id: str, journal: Journal, say: Say, reporter: Reporter
) -> tuple[str, dict[str, Any]]:
    job = Run.resume(KIND, job_id, journal, say)
    request = Request(**job.params["request"])

    def drive() -> dict[str, Any]:
        locks = []
        for uri in request.uris:
            with virt.connection(uri, request.connect_timeout) as conn:
                host = virt.identity(conn).uuid
            locks.append(_names_lock(host, uri, request.pattern))
        if job.params.get("vm"):
            locks.append(capture.Vm(**job.params["vm"]).lock())
        return _steps(job, locks, reporter)

    return job_id, job.execute(drive)


def _names_lock(host: str, uri: str, pattern: str) -> Lock:
    """The clone names a pattern makes on a host (by its UUID), for the job making them."""
    return Lock(f"clone-names:{host}/{pattern}", f"clone names {pattern} on {uri}")


def _golden(request: Request, journal: Journal) -> dict[str, Any] | None:
    """The golden cloned: the newest sealed version of a name or of an image path. An
    image never sealed only with --personalize none (it would pass on its identity).
    None: neither, so perhaps a VM."""
    sealed = [g for g in goldens.goldens(journal)
              if request.source in (g["name"], g["path"])
              or os.path.abspath(request.source) == g["path"]]  # fmt: skip
    if sealed:
        found = sealed[-1]
        if not found["present"]:
            raise InputError(f"golden {found['name']} version {found['version']} is gone from "
                             f"{found['path']}")  # fmt: skip
        return found
    if not os.path.isfile(request.source):
        return None
    if request.personalize != "none":
        raise InputError(f"{request.source} is not a sealed golden: its clones would all "
                         "carry its identity (machine-id, SSH host keys); seal it with "
                         "`p2v golden seal`, or clone it as it is with --personalize "
                         "none")  # fmt: skip
    from p2v.transfer.endpoints import open_source

    path = os.path.abspath(request.source)
    with open_source(path) as source:
        size = source.size
    return {"name": os.path.basename(path).removesuffix(".qcow2"), "version": "unsealed",
            "path": path, "digest": None, "size": size, "firmware": "bios",
            "nic_names": [], "first_boot": "none"}  # fmt: skip


def check_offline(request: Request, golden: dict[str, Any]) -> None:
    """Offline personalization mounts the same root partition of many clones' disks."""
    if request.personalize == "offline" and batch.partition_of(golden.get("root")) is None:
        raise InputError(f"golden {golden['name']}'s root ({golden.get('root') or 'unknown'}) "
                         "is not a partition: its clones cannot be written side by side in "
                         "one appliance; use --personalize first-boot")  # fmt: skip


def base_name(golden: dict[str, Any]) -> str:
    digest = str(golden.get("digest") or "").rpartition(":")[2][:12] or "unsealed"
    return f"{golden['name']}-v{golden['version']}-{digest}.qcow2"


def _targets(request: Request, base: str | None) -> list[Target]:
    """Each host's part; `base`: the base's volume name, None when it is made new."""
    out = []
    seen: dict[str, str] = {}
    for uri in request.uris:
        with virt.connection(uri, request.connect_timeout) as conn:
            host = virt.identity(conn).uuid
            if host in seen:
                raise InputError(f"{uri} and {seen[host]} are one host: give it once")
            seen[host] = uri
            pool = virt.pool(conn, request.pool)
            storage.refresh(pool)
            names, macs = domains.names_and_macs(conn)
            memory = domains.free_memory(conn)
            base_needed = base is None or virt.volume(pool, base) is None
            there = planning.Host(uri, memory, frozenset(names), frozenset(macs))
            out.append(Target(uri, host, base_needed, virt.free_bytes(pool), there))
    return out


def _check_room(
    request: Request, golden_bytes: int, targets: list[Target], uris: list[str]
) -> None:
    short = []
    for target in targets:
        share = uris.count(target.uri)
        each = golden_bytes if request.full else OVERLAY_ROOM
        needed = share * each + (golden_bytes * 2 if target.base_needed else 0)
        if needed > target.room:
            short.append(f"{target.uri}: the pool {request.pool} has {format_size(target.room)} "
                         f"free, its {share} clones need {format_size(needed)}")  # fmt: skip
    if short:
        raise InputError("; ".join(short))


def _steps(job: Run, locks: list[Lock], reporter: Reporter) -> dict[str, Any]:
    for lock in locks:
        job.lock(lock)
    request = Request(**job.params["request"])
    golden = job.params["golden"]
    if golden is None:  # a VM's: taken, sealed unless --personalize none
        golden = capture.golden_of(job, capture.Vm(**job.params["vm"]),
                                   request.personalize != "none", reporter, request.tls_certs,
                                   request.nbd_port, request.connect_timeout)  # fmt: skip
        check_offline(request, golden)
    made = planning.Plan.from_json(job.params["plan"])
    shape = Shape(
        firmware=golden.get("firmware") or "bios", memory_mib=request.memory_mib or 1024,
        vcpus=request.vcpus or 1, network=request.network,
        domain_type=job.params["domain_type"],
        nic_names=tuple(golden.get("nic_names") or ()),
        identity=request.personalize != "none",
    )  # fmt: skip
    bases = {}
    for uri in dict.fromkeys(c.uri for c in made.clones):
        make_base = functools.partial(_base, job, request, golden, uri, reporter)
        bases[uri] = job(Step(f"base {uri}", make_base))
    offline = None
    if request.personalize == "offline":
        offline = job(Step("personalize", lambda: _personalize(job, request, golden, made,
                                                                  bases)))  # fmt: skip
    clones = []
    with virt.Connections(request.connect_timeout) as conns:
        for identity in made.clones:
            base = bases[identity.uri]
            local = offline["overlays"][identity.name] if offline else None
            make_clone = functools.partial(_clone, job, conns(identity.uri), request, golden,
                                           identity, base, shape, local)  # fmt: skip
            done = job(Step(f"clone {identity.name}", make_clone))
            clones.append({**identity.to_json(), "disk": done["disk"]})
        job.record = {"golden": golden, "clones": clones}
        if request.start:
            job(Step("start", lambda: _start(job, conns, request, made)))
    if offline:
        job(Step("clean up", lambda: _remove(offline["scratch"]), again=True))
    kept = ("name", "version", "path", "digest", "macs", "root")
    return {"golden": {k: golden.get(k) for k in kept}, "clones": clones,
            "bases": {u: b["path"] for u, b in bases.items()}}  # fmt: skip


def _base(
    job: Run, request: Request, golden: dict[str, Any], uri: str, reporter: Reporter
) -> dict[str, Any]:
    """Step `base URI`: the golden in the host's pool, read-only, once per host."""
    name = base_name(golden)
    with virt.connection(uri, request.connect_timeout) as conn:
        pool = virt.pool(conn, request.pool)
        storage.refresh(pool)
        if (vol := virt.volume(pool, name)) is not None:
            return {"path": storage.path(vol), "copied": False}
    staging = f"{name}.part"
    copy = jobs.CopyRequest(
        source=golden["path"], input_format="raw",  # the qcow2 file, byte for byte
        target=str(VolumeSpec(request.pool, staging, uri)), overwrite=True, verify=True,
        connect_timeout=request.connect_timeout,
    )  # fmt: skip
    copied = jobs.copy(copy, job.journal, reporter, on_job=job.adopt, parent=job.job_id)
    if copied.verified is not True:
        raise InputError(f"the golden's copy on {uri} does not read back as it was sent")
    with virt.connection(uri, request.connect_timeout) as conn:
        pool = virt.pool(conn, request.pool)
        storage.refresh(pool)
        part = virt.volume(pool, staging)
        if (vol := virt.volume(pool, name)) is None:  # made by a run cut short?
            vol = storage.durable_clone(part, name, mode=0o444)
        storage.delete_volume(part)
        job.say(f"golden {golden['name']} v{golden['version']} is {request.pool}/{name} on {uri}")
        return {"path": storage.path(vol), "copied": True, "child": copied.job_id}


def _personalize(
    job: Run,
    request: Request,
    golden: dict[str, Any],
    made: planning.Plan,
    bases: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Step `personalize`: every clone's overlay made here over the local golden, its
    identity written (batched appliances), then pointed at its host's base, ready for
    its upload. A run cut short starts this step again from nothing."""
    for old in glob.glob(os.path.join(SCRATCH_ROOT, f"p2v-clone-{job.job_id}-*")):
        shutil.rmtree(old, ignore_errors=True)
    scratch = tempfile.mkdtemp(prefix=f"p2v-clone-{job.job_id}-", dir=SCRATCH_ROOT)
    clones = {c.name: c for c in made.clones}
    disks = personalize.overlays(golden["path"], clones, scratch)
    rng = random.Random(request.seed) if request.seed is not None else random.SystemRandom()
    started = time.monotonic()
    written = personalize.write(disks, clones, list(golden.get("nic_names") or []),
                                golden.get("root"), rng)  # fmt: skip
    for name, path in disks.items():
        qemu.rebase_unsafe(path, bases[clones[name].uri]["path"])  # its copy there
    job.say(f"{len(disks)} clones personalized in {time.monotonic() - started:.1f} s")
    return {"scratch": scratch, "overlays": disks,
            "machine_ids": {n: w["machine_id"] for n, w in written.items()},
            "addresses": {n: w["address"] for n, w in written.items() if w["address"]}}  # fmt: skip


def _remove(scratch: str) -> dict[str, Any]:
    shutil.rmtree(scratch, ignore_errors=True)
    return {"removed": scratch}


def _clone(
    job: Run,
    conn: Any,
    request: Request,
    golden: dict[str, Any],
    identity: planning.Identity,
    base: dict[str, Any],
    shape: Shape,
    local: str | None,
) -> dict[str, Any]:
    """Step `clone NAME`: its child job, made, gone on with, or found done."""
    earlier = job.child()
    if earlier and (record := job.journal.get(earlier)).state == "done" and record.result:
        return {"child": earlier, **record.result}
    if earlier:
        one = Run.resume(CLONE_VM, earlier, job.journal, _quiet)
    else:
        one = Run.start(CLONE_VM, {"identity": identity.to_json()}, job.journal, _quiet,
                        parent=job.job_id)  # fmt: skip
        job.adopt(one.job_id)
    result = one.execute(lambda: _make(one, conn, request, golden, identity, base, shape, local))
    return {"child": one.job_id, **result}


def _quiet(_: str) -> None:
    """A clone's own steps are not announced: the bulk job says each clone made."""


def _make(
    one: Run,
    conn: Any,
    request: Request,
    golden: dict[str, Any],
    identity: planning.Identity,
    base: dict[str, Any],
    shape: Shape,
    local: str | None,
) -> dict[str, Any]:
    """A clone's child job: `disk` (an overlay over its host's base, its copy with
    --full, or its overlay personalized here, uploaded), then `define`."""
    volume = f"{identity.name}.qcow2"
    pool = virt.pool(conn, request.pool)

    def disk() -> dict[str, Any]:
        if (vol := virt.volume(pool, volume)) is not None:
            if not one.earlier("disk").get("making"):
                raise InputError(f"the pool {request.pool} on {identity.uri} has a volume "
                                 f"{volume} this job did not make")  # fmt: skip
            storage.delete_volume(vol)  # cut short: made again whole
        one.remember(making=True)
        base_vol = storage.volume_at(conn, base["path"])
        if base_vol is None:
            raise InputError(f"the golden's base {base['path']} is gone from {identity.uri}")
        if request.full:
            vol = storage.durable_clone(base_vol, volume)
        elif local is not None:
            vol = storage.create_volume(pool, volume, os.path.getsize(local))
            storage.upload_file(conn, vol, local)
            storage.refresh(pool)  # libvirt reads it again: a qcow2 over the base
        else:
            vol = storage.create_overlay(pool, volume, base_vol, int(golden["size"]))
        return {"making": True, "path": storage.path(vol)}

    made = one(Step("disk", disk))

    def define() -> dict[str, Any]:
        found = virt.lookup(conn, identity.name)
        if found is not None:
            if found.UUIDString() != identity.uuid:
                raise InputError(f"{identity.uri} has a domain named {identity.name} "
                                 "this job did not make")  # fmt: skip
            return {"uuid": identity.uuid}
        xml = clone_xml(identity, made["path"], int(golden["size"]), shape)
        virt.define(conn, xml)
        return {"uuid": identity.uuid}

    one(Step("define", define))
    return {"uuid": identity.uuid, "disk": made["path"]}


def _start(
    job: Run, conns: virt.Connections, request: Request, made: planning.Plan
) -> dict[str, Any]:
    """Step `start`: the clones started `wave` at a time, WAVE_GAP seconds apart, so
    their boots do not all land on their hosts at once."""
    started = []
    clones = made.clones
    for first in range(0, len(clones), request.wave):
        if first:
            time.sleep(WAVE_GAP)
        for identity in clones[first : first + request.wave]:
            domain = virt.find(conns(identity.uri), identity.name)
            if virt.state(domain) != "running":
                virt.start(domain)
            started.append(identity.name)
        job.say(f"started {len(started)} of {len(clones)}")
    return {"started": started}
