"""`p2v convert ... --target kvm --verify-boot`: a SATA-only test server comes out as
a guest that boots on virtio-blk, with the same hostname and the root found by UUID
or LVM name: bios-ext4 served by an agent onto another libvirt host (a test host),
even when the agent stopped answering and the conversion was killed and resumed,
uefi-lvm with Secure Boot into this host's libvirt. The source image is never
written. (bios-ext4 is converted through the agent ISO to files, its NIC keeping its
name and configuration: test_agent_iso.py.)

Slow: an appliance, a copy and a boot under QEMU (TCG here) per fixture.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from imagebuilder.fixups.initramfs import DRACUT_CONF
from p2v import firmware
from p2v.host import virt
from tests import hosts
from tests.conftest import attach_loop, fixture_image, require_root
from tests.e2e.converted import check_converted, on_the_host
from tests.integration.agent.test_serve import PORT, secret_file, serving
from tests.integration.transfer.disks import data_blocks, digest, p2v

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def durable_blocks(job: str, step: str) -> int:
    """Data blocks the copy of a conversion's step has durably written, so far."""
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        detail = next((s["detail"] for s in journal.steps(job) if s["name"] == step), None)
        child = (detail or {}).get("child")
        return data_blocks(child) if child else 0
    finally:
        journal.close()


def test_a_private_output_dir_is_refused_before_copying(tmp_path: Path) -> None:
    image = fixture_image("bios-ext4")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    done = p2v("convert", "--disk", str(image), "--output-dir", str(private / "out"),
               "--verify-boot", check=False)  # fmt: skip
    assert done.returncode == 2
    assert "libvirt's QEMU user cannot reach" in done.stderr
    assert not (private / "out").exists() or not list((private / "out").iterdir())


def test_a_disk_without_an_os_is_refused_before_copying(tmp_path: Path) -> None:
    blank = tmp_path / "blank.raw"
    with open(blank, "wb") as f:
        f.truncate(256 << 20)
    out = tmp_path / "out"
    done = p2v("convert", "--disk", str(blank), "--output-dir", str(out), check=False)
    assert done.returncode == 7
    assert "no operating system found on the disks" in done.stderr
    assert not list(out.glob("*.qcow2"))


def test_an_encrypted_disk_without_key_is_refused_before_copying(tmp_path: Path) -> None:
    disk = tmp_path / "luks.raw"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    key = tmp_path / "key"
    key.write_text("not-for-p2v")
    subprocess.run(
        ["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
         "--pbkdf-force-iterations", "1000", "--key-file", str(key), str(disk)],
        check=True, capture_output=True,
    )  # fmt: skip
    out = tmp_path / "out"
    done = p2v("convert", "--disk", str(disk), "--output-dir", str(out), check=False)
    assert done.returncode == 7
    assert "/dev/sda is encrypted (LUKS)" in done.stderr
    assert "cannot open encrypted volumes" in done.stderr
    assert not list(out.glob("*.qcow2"))


def virsh(*args: str) -> str:
    return subprocess.run(
        ["virsh", "-c", "qemu:///session", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_secure_boot_guest_replaces_a_stale_domain_cleanly_and_boots_when_checked_again(
    out: Path, tmp_path: Path
) -> None:
    """uefi-lvm (its shim and GRUB are signed) converted with --target kvm --overwrite
    into qemu:///session with Secure Boot on, where a stale domain of the same name
    stands, its disk at the new disk's path and its firmware variables those of a
    machine with no Secure Boot keys: it is replaced cleanly (a new definition, new
    disks, its variables gone with it). A boot check that is far too short fails for
    what it is (exit 8, saying what exists and how to check again); checked again with
    --resume, without reading the source, the guest boots with Secure Boot enforced,
    which the stale variables, had they been kept, would not allow."""
    name = f"p2v-sb-{secrets.token_hex(3)}"
    image = fixture_image("uefi-lvm")
    before = digest(image)
    disk = out / f"{name}-sda.qcow2"
    nvram = Path(f"/var/lib/libvirt/qemu/nvram/{name}_VARS.fd")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "1G"], check=True,
                   capture_output=True)  # fmt: skip
    nvram.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(firmware.OVMF_VARS, nvram)
    stale = tmp_path / "stale.xml"
    stale.write_text(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><os>"
        "<type arch='x86_64' machine='q35'>hvm</type>"
        f"<loader readonly='yes' type='pflash'>{firmware.OVMF_CODE}</loader>"
        f"<nvram>{nvram}</nvram></os><features><acpi/></features>"
        "<devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='qcow2'/><source file='{disk}'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    argv = [
        "convert", "--disk", str(image), "--target", "kvm", "--storage", str(out),
        "--name", name, "--secure-boot", "--vcpus", "2", "--verify-boot", "--json",
        "--overwrite",
    ]  # fmt: skip
    try:
        with virt.connection("qemu:///session") as conn:  # starts libvirt's daemon
            stale_uuid = virt.define(conn, stale.read_text()).UUIDString()
        stale_disk = (disk.stat().st_ino, disk.stat().st_mtime_ns)
        failed = p2v(*argv, "--boot-timeout", "2", check=False, timeout=1400)
        assert failed.returncode == 8, failed.stderr
        assert virsh("domuuid", name) != stale_uuid, "a new definition"
        assert virsh("list", "--all", "--name").split().count(name) == 1
        assert (disk.stat().st_ino, disk.stat().st_mtime_ns) != stale_disk, "new disks"
        # The server's initramfs is dracut's (initramfs-tools' /etc is left over): the
        # drivers go where dracut looks, and its next rebuild keeps them.
        assert f"{DRACUT_CONF}: virtio drivers added" in failed.stderr
        job = next(w for w in failed.stderr.split() if w.startswith("convert-"))
        assert "the guest was converted but did not boot within 2 s" in failed.stderr
        assert f"Its disks are {disk}" in failed.stderr
        assert f"the domain '{name}' is defined in qemu:///session" in failed.stderr
        assert f"To check again: p2v convert --resume {job}" in failed.stderr
        assert virsh("domstate", name) == "shut off"

        done = p2v("convert", "--resume", job, "--boot-timeout", "900", "--json", timeout=1400)
        assert "the source is not read again" in done.stderr
        result = json.loads(done.stdout)
        check_converted("uefi-lvm", result, done.stderr)
        assert "Secure boot enabled" in (out / f"{name}.console.log").read_text(errors="replace")
        assert virsh("domstate", name) == "shut off"
    finally:
        for command in (["destroy", name], ["undefine", "--nvram", name]):
            subprocess.run(["virsh", "-c", "qemu:///session", *command], capture_output=True)
    assert digest(image) == before, "the source image must not change"


def test_a_conversion_onto_another_host_outlives_its_agent_stopping_and_a_kill(
    tmp_path: Path,
) -> None:
    """bios-ext4 served by `p2v-agent serve` from a loop device (as on a server booted
    from the ISO), converted onto another libvirt host (a test host), its disk a volume
    of that host's pool filled through the libvirt connection. The agent stops
    answering in the middle of the copy: the conversion fails within its time limits,
    says it is the agent and that `p2v convert --resume JOB` goes on (not the inner
    copy's command). Resumed, it is killed (-9) in the middle of the copy. Resumed
    again, it goes on with the one copy it started, copying only what the volume does
    not durably hold, without fixing the guest again: the volume then reads back with
    the digest of the fixed guest, the domain is defined there, and this host keeps no
    copy of the disk. No boot: the disk is loop0 to the agent but sda to the guest,
    whose fstab still names sda (bios-ext4 converted through the agent ISO boots, in
    test_agent_iso.py)."""
    require_root("test hosts are namespaces")
    name = "through-agent"
    image = fixture_image("bios-ext4")
    before = digest(image)
    device = attach_loop(image, "--read-only")
    key = secret_file(tmp_path)
    disk = Path(device).name
    step = f"copy {disk}"
    try:
        with (
            hosts.running(["p2vt-target"]) as [host],
            serving("--secret-file", str(key), "--disk", disk) as (agent, _),
        ):
            nbdkit = next(p for p in psutil.Process(agent.pid).children() if p.name() == "nbdkit")
            limits = ["--bwlimit", "40M", "--io-timeout", "3", "--connect-timeout", "2"]
            argv = [
                "convert", "--agent", f"127.0.0.1:{PORT}", "--secret-file", str(key),
                "--target", "kvm", "-c", host.uri, "--name", name, "--checkpoint", "0.5",
                *limits,
            ]  # fmt: skip
            job, err = stop_the_agent_mid_copy(argv, nbdkit, step, blocks=2)
            assert f"the agent at 127.0.0.1:{PORT} does not answer" in err
            assert f"resume with `p2v convert --resume {job}`" in err
            assert "p2v copy --resume" not in err and "Traceback" not in err
            first_copy = copy_job_of(job, step)

            kill_mid_copy(["convert", "--resume", job, *limits], job, step, blocks=6)
            assert "interrupted" in p2v("history").stdout

            done = p2v("convert", "--resume", job, "--bwlimit", "10G", "--json", timeout=1400)
            result = json.loads(done.stdout)
            assert "fix-ups ..." not in done.stderr, "the guest was fixed before: not again"
            assert result["job_id"] == job
            assert result["copies"][0]["job_id"] == first_copy, "one copy, resumed twice"
            copy_job = json.loads(p2v("history", first_copy, "--json").stdout)
            assert copy_job["result"]["resumed"] >= 6 * (4 << 20), "durable blocks stay done"
            on_the_host(host, name, disk, result, image.stat().st_size)
            there = f"volume:default/{name}-{disk}.img@{host.uri}"
            assert p2v("checksum", there).stdout.split()[0] == result["copies"][0]["digest"]
            assert json.loads(p2v("history", job, "--json").stdout)["state"] == "done"
            work = Path(os.environ["P2V_HOME"]) / "guests"
            assert not list(work.glob(".p2v-*")), "the work directory goes once the job is done"
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
    assert digest(image) == before, "the source image must not change"


def kill_mid_copy(argv: list[str], job: str, step: str, blocks: int) -> None:
    """Run `p2v ARGV`; once its copy has `blocks` data blocks durable, kill it (-9)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2v.cli", *argv], stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(f"p2v: {step} ..."):
            break
    else:
        raise AssertionError(f"the conversion ended before its copy: {proc.wait()}")
    deadline = time.monotonic() + 120
    while durable_blocks(job, step) < blocks:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def copy_job_of(job: str, step: str) -> str:
    detail = next(s["detail"] for s in json.loads(p2v("history", job, "--json").stdout)["steps"]
                  if s["name"] == step)  # fmt: skip
    return str(detail["child"])


def stop_the_agent_mid_copy(
    argv: list[str], nbdkit: psutil.Process, step: str, blocks: int
) -> tuple[str, str]:
    """Run `p2v ARGV`; once its copy has `blocks` data blocks durable, stop the agent
    (SIGSTOP) until the command has failed, exit 6. Returns the job and what it said."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2v.cli", *argv], stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:
        said.append(line)
        if line.startswith(f"p2v: {step} ..."):
            break
    else:
        raise AssertionError(f"no copy: {''.join(said)}")
    text = "".join(said)
    job = argv[argv.index("--resume") + 1] if "--resume" in argv else (
        next(w for w in text.split() if w.startswith("convert-"))
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while durable_blocks(job, step) < blocks:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    # Copying, it holds its domain locked already: by UUID, and by name on the host.
    name = argv[argv.index("--name") + 1] if "--name" in argv else None
    locks = json.loads(p2v("show", job, "--json").stdout)["locks"]
    assert name is None or len(locks) == 2 and all(lock.startswith(f"{name} on ") for lock in locks)
    nbdkit.send_signal(signal.SIGSTOP)
    try:
        text += proc.stderr.read()
        proc.wait(60)
    finally:
        nbdkit.send_signal(signal.SIGCONT)
    assert proc.returncode == 6, text
    return job, text
