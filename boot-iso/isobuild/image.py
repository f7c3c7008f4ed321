"""Layer 3: the hybrid BIOS/UEFI ISO, and the per-job ISO carrying a secret.

BIOS: GRUB's El Torito image on CD, GRUB's hybrid MBR on a USB stick. UEFI: an EFI
system partition appended to the image (so it also boots from a stick) holding
Debian's signed shim and GRUB, which is what lets it boot with Secure Boot on.
Both GRUBs read the same /boot/grub/grub.cfg.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from isobuild.common import BOOT_ISO, VOLUME_LABEL, BuildError, log, pack_cpio, run
from isobuild.overlay import agent_layer
from isobuild.packages import PackageLayer, package_layer

GRUB_CFG = BOOT_ISO / "grub.cfg"
GRUB_PC = Path("/usr/lib/grub/i386-pc")
# Built into the BIOS GRUB image, which then needs no module directory on the medium.
BIOS_GRUB_MODULES = (
    "biosdisk", "iso9660", "part_msdos", "part_gpt", "normal", "configfile", "linux",
    "search", "search_fs_file", "test", "echo", "serial", "terminal", "sleep",
)  # fmt: skip
SECRET_PART = "boot/secret.img"
SECRET_PATH = "etc/p2v/secret"  # where the agent looks for it on the live system


def build_iso(output: Path) -> Path:
    """The agent ISO at `output`, from the cached layers (built when missing)."""
    packages = package_layer()
    agent = agent_layer()
    with tempfile.TemporaryDirectory(prefix="p2v-iso-") as tmp:
        stage = Path(tmp) / "iso"
        _stage(stage, packages, agent)
        efi_image = Path(tmp) / "efi.img"
        _efi_partition(packages.efi, efi_image)
        partial = output.with_name(output.name + ".partial")
        output.parent.mkdir(parents=True, exist_ok=True)
        _xorriso(stage, efi_image, partial)
        partial.rename(output)
    log(f"wrote {output} ({output.stat().st_size / 2**20:.0f} MiB)")
    return output


def build_job_iso(base: Path, secret_file: Path, output: Path) -> Path:
    """A copy of the ISO `base` with the secret as /boot/secret.img. Seconds: the base's
    files and boot records are reused as they are."""
    key = secret_file.read_text().strip()
    if not key:
        raise BuildError(f"{secret_file} is empty")
    with tempfile.TemporaryDirectory(prefix="p2v-job-") as tmp:
        part_root = Path(tmp) / "root"
        secret = part_root / SECRET_PATH
        secret.parent.mkdir(parents=True, mode=0o700)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        part = Path(tmp) / "secret.img"
        pack_cpio(part_root, part, ("cat",))  # tiny: compression would not help
        partial = output.with_name(output.name + ".partial")
        partial.unlink(missing_ok=True)
        run([
            "xorriso", "-indev", base, "-outdev", partial,
            "-boot_image", "any", "replay",
            "-map", part, f"/{SECRET_PART}",
        ])  # fmt: skip
        partial.chmod(0o600)  # it holds a secret
        partial.rename(output)
    log(f"wrote {output} (job ISO: the secret is in /{SECRET_PART})")
    return output


def _stage(stage: Path, packages: PackageLayer, agent: Path) -> None:
    boot = stage / "boot"
    (boot / "grub").mkdir(parents=True)
    shutil.copy(packages.kernel, boot / "vmlinuz")
    shutil.copy(packages.root_image, boot / "root.img")
    shutil.copy(agent, boot / "agent.img")
    shutil.copy(GRUB_CFG, boot / "grub" / "grub.cfg")
    # Debian's GRUB for CDs finds its medium by this file.
    (stage / ".disk").mkdir()
    (stage / ".disk" / "info").write_text("p2v agent (Debian 12)\n")
    run([
        "grub-mkimage", "--format", "i386-pc-eltorito", "--prefix", "/boot/grub",
        "--output", boot / "grub" / "bios.img", *BIOS_GRUB_MODULES,
    ])  # fmt: skip


def _efi_partition(efi: Path, image: Path) -> None:
    """FAT image of /EFI/BOOT (shim, GRUB, MokManager), made with mtools: no mounting."""
    size_kib = sum(f.stat().st_size for f in efi.iterdir()) // 1024 + 1024
    run(["mkfs.fat", "-C", "-n", "P2V-EFI", image, str(size_kib)])
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"], env=env)
    for f in sorted(efi.iterdir()):
        run(["mcopy", "-i", image, f, f"::/EFI/BOOT/{f.name}"], env=env)


def _xorriso(stage: Path, efi_image: Path, output: Path) -> None:
    run([
        "xorriso", "-as", "mkisofs", "-quiet", "-o", output,
        "-V", VOLUME_LABEL, "-r", "-J",
        # BIOS: El Torito from CD; GRUB's hybrid MBR from a USB stick.
        "--grub2-mbr", GRUB_PC / "boot_hybrid.img", "-partition_offset", "16",
        "-b", "boot/grub/bios.img", "-no-emul-boot", "-boot-load-size", "4",
        "-boot-info-table", "--grub2-boot-info",
        # UEFI: the EFI system partition, appended (GPT) and also the El Torito EFI image.
        "-append_partition", "2", "0xef", efi_image, "-appended_part_as_gpt",
        "-eltorito-alt-boot", "-e", "--interval:appended_partition_2:all::",
        "-no-emul-boot",
        stage,
    ])  # fmt: skip
