"""`p2v golden seal SOURCE --to IMAGE` as a job on the step runner: a golden image
made once, from which clones are made by the thousand.

Steps: `check` (the source: an image file, or a shut-off VM with one disk, on any
host; the golden not there yet), `copy` (a child copy job: the source is only read,
never sealed in place), `sysprep` (virt-sysprep's operations, seal.SYSPREP_OPERATIONS),
`seal` (one libguestfs appliance: MAC bindings out of the network configuration,
random seeds removed, the first-boot identity unit, or cloud-init made to run
again, the marker with name and version; then the golden's MACs looked for in every
network file, which must find none), `record` (the golden's digest; the file made
read-only). A failure leaves no half-sealed golden: the copy is removed.

The journal is the registry: `p2v golden list` reads the done seal jobs, and the
clone jobs that name each golden.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2v import appliance
from p2v.clone import seal
from p2v.errors import ComponentError, InputError
from p2v.host import virt
from p2v.host.virt import domains, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.jobs.journal import Journal, Lock
from p2v.jobs.runner import Kind, Run, Step
from p2v.qemu import image_info
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT, jobs
from p2v.transfer.endpoints import open_source
from p2v.transfer.endpoints.volume import VolumeSpec
from p2v.transfer.progress import Reporter

Say = Callable[[str], None]
SYSPREP_TIMEOUT = 1800.0  # seconds; an appliance under TCG on a big image is slow


@dataclass(frozen=True)
class Request:
    source: str  # an image file, or a VM's name on `uri`
    to: str  # the golden image (qcow2), made here
    uri: str | None = None  # the VM's host; None: `source` is a file
    name: str | None = None  # default: the file name of `to` without .qcow2
    version: str | None = None  # default: one more than the last seal of `name`
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    r = params.get("request", {})
    where = f"{r.get('source')} on {r.get('uri')}" if r.get("uri") else r.get("source")
    name = params.get("name", "?")
    return f"golden {name} {params.get('version', '')} sealed from {where} to {r.get('to')}"


def _outcome(result: dict[str, Any]) -> str | None:
    return str(result["digest"]) if result.get("digest") else None


KIND = Kind("golden", _describe, _outcome)


def run(
    request: Request,
    journal: Journal,
    say: Say,
    reporter: Reporter,
    parent: str | None = None,
    on_job: Callable[[str], None] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Seal as asked; `parent`: the job this seal is part of (a clone of a VM), told
    the seal's id by `on_job` before anything is made."""
    to = os.path.abspath(request.to)
    request = Request(**{**request.to_json(), "to": to})
    source, fmt = _source(request)
    if os.path.exists(to):
        raise InputError(f"{to} exists: a golden is sealed into a new file")
    if not os.path.isdir(os.path.dirname(to)):
        raise InputError(f"{os.path.dirname(to)} is not a directory")
    name = request.name or Path(to).name.removesuffix(".qcow2")
    version = request.version or str(_last_version(journal, name) + 1)
    lock = _lock(to)
    journal.refuse_held(lock)
    params = {"request": request.to_json(), "name": name, "version": version,
              "source": source, "format": fmt}  # fmt: skip
    job = Run.start(KIND, params, journal, say, parent)
    if on_job:
        on_job(job.job_id)
    else:
        say(f"job {job.job_id} (`p2v show {job.job_id}` shows its steps)")
    return job.job_id, job.execute(lambda: _steps(job, lock, reporter))


def resume(
    job_id: str, journal: Journal, say: Say, reporter: Reporter
) -> tuple[str, dict[str, Any]]:
    job = Run.resume(KIND, job_id, journal, say)
    to = job.params["request"]["to"]
    return job_id, job.execute(lambda: _steps(job, _lock(to), reporter))


def _lock(to: str) -> Lock:
    return Lock(f"golden:{to}", f"golden image {to}")


def _source(request: Request) -> tuple[str, str]:
    """What the copy reads (a file, or the VM's volume through its host's libvirt)
    and in which format the golden gets it (copy_format)."""
    if request.uri is None:
        if not os.path.isfile(request.source):
            raise InputError(f"{request.source}: no such image file")
        try:
            info = image_info(request.source)
        except ComponentError as error:
            raise InputError(str(error)) from None
        if info.get("backing-filename"):
            raise InputError(f"{request.source} has a backing file: a golden is one whole "
                             "image (`qemu-img convert` it first)")  # fmt: skip
        return os.path.abspath(request.source), str(info["format"])
    with virt.connection(request.uri, request.connect_timeout) as conn:
        domain = virt.find(conn, request.source)
        if (state := virt.state(domain)) != "shut off":
            raise InputError(f"{request.source} is {state}: a golden is sealed from a "
                             "shut-off VM (its disk then holds all it wrote)")  # fmt: skip
        xml = DomainXml.parse(domains.definition(domain))
        _, vol, spec = vm_volume(conn, xml, request.uri)
        if storage.backing(vol):
            raise InputError(f"{request.source}'s disk has a backing file (a snapshot "
                             "overlay or a linked clone): seal a whole image")  # fmt: skip
        return str(spec), copy_format(storage.format_of(vol))


def vm_volume(conn: Any, xml: DomainXml, uri: str) -> tuple[str, Any, VolumeSpec]:
    """A VM's one writable disk: its target, its volume, and that volume as the
    transfer engine reads it; refused when the VM has another number of disks, or its
    disk is in no storage pool of its host."""
    disks = xml.writable_disks()
    if len(disks) != 1:
        raise InputError(f"{xml.name} has {len(disks)} writable disks: a golden image is "
                         "one disk")  # fmt: skip
    vol = storage.volume_at(conn, disks[0].source)
    if vol is None:
        raise InputError(f"{xml.name}'s disk {disks[0].source} is in no storage pool of its "
                         "host")  # fmt: skip
    return disks[0].target, vol, VolumeSpec(storage.pool_name(storage.pool_of(vol)),
                                            vol.name(), uri)  # fmt: skip


def copy_format(volume_format: str) -> str:
    """The copy's output format for a volume read whole: `raw` copies a qcow2 volume
    byte for byte (it is a qcow2 file), `qcow2` converts another."""
    return "raw" if volume_format == "qcow2" else "qcow2"


def _last_version(journal: Journal, name: str) -> int:
    versions = [int(v) for g in goldens(journal) if g["name"] == name
                and str(v := g["version"]).isdigit()]  # fmt: skip
    return max(versions, default=0)


def _steps(job: Run, lock: Lock, reporter: Reporter) -> dict[str, Any]:
    job.lock(lock)
    request = Request(**job.params["request"])
    name, version = job.params["name"], job.params["version"]
    to = request.to
    try:
        job(Step("copy", lambda: _copy(job, request, reporter),
                 still=lambda _: os.path.exists(to)))  # fmt: skip
        job(Step("sysprep", _sysprep_step(to), needs=("copy",)))
        sealed = job(Step("seal", lambda: _seal(to, name, version, job.say),
                          needs=("sysprep",)))  # fmt: skip
        recorded = job(Step("record", lambda: _record(to, reporter), needs=("seal",)))
    except BaseException:
        _remove(to)  # never a half-sealed golden to clone from
        raise
    return {"name": name, "version": version, "path": to, "digest": recorded["digest"],
            "size": recorded["size"], "os": sealed["os"], "firmware": sealed["firmware"],
            "root": sealed["root"],
            "first_boot": sealed["first_boot"],
            "macs": sealed["macs"], "nic_names": sealed["nic_names"],
            "changes": sealed["changes"]}  # fmt: skip


def _copy(job: Run, request: Request, reporter: Reporter) -> dict[str, Any]:
    copy = jobs.CopyRequest(
        source=job.params["source"], target=request.to, overwrite=True,
        input_format=None if request.uri else job.params["format"],
        output_format=job.params["format"] if request.uri else "qcow2",
        connect_timeout=request.connect_timeout,
    )  # fmt: skip
    copied = jobs.copy(copy, job.journal, reporter, on_job=job.adopt, parent=job.job_id)
    return {"child": copied.job_id, "source_digest": copied.digest}


def _sysprep_step(image: str) -> Callable[[], dict[str, Any]]:
    def sysprep() -> dict[str, Any]:
        command = ["virt-sysprep", "--format", "qcow2", "-a", image, "--quiet",
                   "--operations", ",".join(seal.SYSPREP_OPERATIONS)]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  env=appliance.tool_environment(),
                                  timeout=SYSPREP_TIMEOUT, check=False)  # fmt: skip
        except FileNotFoundError as error:
            raise ComponentError("virt-sysprep is missing: install libguestfs-tools") from error
        except subprocess.TimeoutExpired as error:
            raise ComponentError(f"virt-sysprep did not end within {SYSPREP_TIMEOUT:.0f} s") \
                from error  # fmt: skip
        if done.returncode != 0:
            if "no operating systems" in done.stderr:
                raise InputError(f"{image}: no operating system found: a golden image holds one")
            raise ComponentError(f"virt-sysprep failed: {done.stderr.strip()[-2000:]}")
        return {"operations": list(seal.SYSPREP_OPERATIONS)}

    return sysprep


def _seal(image: str, name: str, version: str, say: Say) -> dict[str, Any]:
    """One appliance: the seal's own edits, then the check that no network file
    names a MAC the golden had."""
    from imagebuilder.fixups.linux import GuestError, inspect_and_mount

    g = appliance.new_handle()
    g.add_drive_opts(image, format="qcow2")
    g.launch()
    try:
        try:
            guest = inspect_and_mount(g)
        except GuestError as error:
            raise InputError(f"{image}: {error}: a golden image holds an operating system") \
                from None  # fmt: skip
        if guest.type != "linux":
            raise InputError(f"{image} holds {guest.type}: golden images are Linux (yet)")
        changes: list[str] = []
        macs: set[str] = set()
        names: set[str] = set()  # NIC names the golden pinned to its MACs: clones pin them anew
        for path in _network_files(g):
            text = g.cat(path)
            macs |= seal.macs_in(text)
            new, removed = seal.unbind(path, text)
            if new is None:
                g.rm(path)
                if (pinned := seal.pinned_name(path)) is not None:
                    names.add(pinned)
            elif removed:
                g.write(path, new.encode())
            changes += removed
        for path in seal.RANDOM_SEEDS:
            if g.is_file(path):
                g.rm(path)
                changes.append(f"{path}: removed (clones must not share a random seed)")
        first_boot = _first_boot(g, changes)
        g.write(seal.MARKER, seal.marker(name, version, time.time()).encode())
        left = [f"{p}: {m}" for p in _network_files(g) for m in seal.macs_in(g.cat(p)) & macs]
        if left:
            raise ComponentError("the golden's MAC addresses are still in its network "
                                 f"configuration: {'; '.join(left)}")  # fmt: skip
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
    for change in changes:
        say(change)
    firmware = "uefi" if "/boot/efi" in guest.mountpoints else "bios"
    return {"os": f"{guest.distro} {guest.version}", "first_boot": first_boot, "firmware": firmware,
            "root": guest.root,
            "macs": sorted(macs), "nic_names": sorted(names), "changes": changes}  # fmt: skip


def _network_files(g: Any) -> list[str]:
    found = []
    for where in seal.NETWORK_CONFIG:
        if g.is_file(where):
            found.append(where)
        elif g.is_dir(where):
            found += [f"{where}/{e}" for e in sorted(g.ls(where)) if g.is_file(f"{where}/{e}")]
    return found


def _first_boot(g: Any, changes: list[str]) -> str:
    """cloud-init where the image has it (its NoCloud data then comes from each
    clone's SMBIOS serial); else p2v's first-boot unit."""
    if g.is_file("/usr/bin/cloud-init"):
        for path in ("/var/lib/cloud/instance", "/var/lib/cloud/instances"):
            if g.exists(path):
                g.rm_rf(path)
                changes.append(f"{path}: removed (cloud-init runs again in each clone)")
        return "cloud-init"
    g.mkdir_p(os.path.dirname(seal.FIRSTBOOT_SCRIPT))
    g.write(seal.FIRSTBOOT_SCRIPT, seal.firstboot_script().encode())
    g.chmod(0o755, seal.FIRSTBOOT_SCRIPT)
    g.write(seal.FIRSTBOOT_UNIT, seal.firstboot_unit().encode())
    g.mkdir_p(os.path.dirname(seal.FIRSTBOOT_WANTS))
    if g.exists(seal.FIRSTBOOT_WANTS):
        g.rm(seal.FIRSTBOOT_WANTS)
    g.ln_s(seal.FIRSTBOOT_UNIT, seal.FIRSTBOOT_WANTS)
    if g.exists(seal.FIRSTBOOT_DONE):
        g.rm(seal.FIRSTBOOT_DONE)
    changes.append(f"{seal.FIRSTBOOT_UNIT}: each clone takes its identity at its first boot")
    return "p2v-firstboot"


def _record(image: str, reporter: Reporter) -> dict[str, Any]:
    with open_source(image, input_format="qcow2") as source:
        digest = jobs.endpoint_digest(source, reporter=reporter)
        size = source.size
    os.chmod(image, 0o444)  # clones build on it: nothing may write it
    return {"digest": digest, "size": size}


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def goldens(journal: Journal) -> list[dict[str, Any]]:
    """Every golden sealed, oldest first: name, version, path, digest, when, job."""
    out = []
    for job in journal.done(KIND.name):
        result = job.result or {}
        out.append({**{k: result.get(k) for k in (
            "name", "version", "path", "digest", "size", "os", "firmware", "nic_names",
            "first_boot", "macs", "root")}, "sealed": job.updated, "job": job.id,
            "present": os.path.exists(str(result.get("path")))})  # fmt: skip
    made = clones_made(journal)
    for row in out:
        clones = made.get(str(row["path"]), {}).get("clones", {})
        row["clones"] = [{"name": c["name"], "uri": c["uri"]} for c in clones.values()]
    return out


def clones_made(journal: Journal) -> dict[str, dict[str, Any]]:
    """Golden image path -> {"golden": as the clone jobs recorded it, "clones": (host
    URI, name) -> the clone as the newest job that made that name there recorded it}.
    From the journal: a clone deleted since is still listed."""
    out: dict[str, dict[str, Any]] = {}
    for job in journal.done("clone"):
        result = job.result or {}
        made_from = result.get("golden") or {}
        group = out.setdefault(str(made_from.get("path")), {"golden": made_from, "clones": {}})
        for clone in result.get("clones", []):
            group["clones"][(clone["uri"], clone["name"])] = clone
    return out
