"""Layer 1: the live system's packages, kernel and signed EFI boot chain.

The root is installed by mmdebstrap (apt resolves, downloads in parallel: about a
minute), then the kernel is unpacked beside it rather than installed, so no
initramfs generator runs; only the modules listed in modules.txt, with what they
depend on, go into the root. The result is one compressed cpio archive, the kernel,
and the files the ISO boots with.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from isobuild.common import (
    BOOT_ISO,
    SUITE,
    BuildError,
    cache_dir,
    debian_mirror,
    digest,
    locked,
    log,
    pack_cpio,
    recipe_lines,
    run,
)

PACKAGES = BOOT_ISO / "packages.txt"
MODULES = BOOT_ISO / "modules.txt"
PRUNE = BOOT_ISO / "prune.txt"
# Downloaded, not installed: unpacked by this builder.
BOOT_PACKAGES = ("shim-signed", "shim-helpers-amd64-signed", "grub-efi-amd64-signed")
# The whole root is packed with zstd: the kernel unpacks it fastest of what it reads.
ROOT_COMPRESS = ("zstd", "-q", "-T0", "-15")


@dataclass(frozen=True)
class PackageLayer:
    """What the ISO is made of, besides the agent."""

    directory: Path

    @property
    def root_image(self) -> Path:  # the live root, a compressed cpio archive
        return self.directory / "root.img"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def efi(self) -> Path:  # shim (BOOTX64.EFI), the signed GRUB for CDs, MokManager
        return self.directory / "efi"


def layer_key() -> str:
    return digest([PACKAGES, MODULES, PRUNE, Path(__file__)], SUITE, *BOOT_PACKAGES)


def package_layer() -> PackageLayer:
    """The cached layer for the current recipe, built when missing."""
    cache = cache_dir()
    target = cache / f"packages-{layer_key()}"
    with locked(cache / ".lock"):
        if (target / ".complete").exists():
            return PackageLayer(target)
        for old in cache.glob("packages-*"):
            shutil.rmtree(old, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix="packages-", dir=cache))
        try:
            _build(work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        (work / ".complete").touch()
        work.rename(target)
    return PackageLayer(target)


def _build(work: Path) -> None:
    root, debs = work / "root", work / "debs"
    debs.mkdir()
    log(f"installing the live system's packages with mmdebstrap ({SUITE}, about a minute)")
    # The hook runs with the new root as $1, before mmdebstrap empties apt's cache:
    # it fetches the kernel and the boot chain with the root's own apt sources.
    download = (
        'chroot "$1" sh -c \'mkdir -p /tmp/debs && cd /tmp/debs && apt-get -q download '
        '$(apt-cache depends linux-image-amd64 | sed -n "s/.*Depends: //p") '
        f'{" ".join(BOOT_PACKAGES)}\' && cp "$1"/tmp/debs/*.deb {debs}/'
    )
    run([
        "mmdebstrap", "--quiet", "--variant=minbase",
        "--aptopt=Apt::Install-Recommends \"false\"",
        f"--include={','.join(recipe_lines(PACKAGES))}",
        f"--customize-hook={download}",
        SUITE, root, debian_mirror(),
    ])  # fmt: skip
    unpacked = work / "unpacked"
    for deb in debs.glob("*.deb"):
        run(["dpkg-deb", "-x", deb, unpacked])
    version = _install_modules(unpacked, root)
    shutil.copy(unpacked / "boot" / f"vmlinuz-{version}", work / "vmlinuz")
    _copy_boot_chain(unpacked, work / "efi")
    _prune(root)
    log("packing the live root (zstd)")
    pack_cpio(root, work / "root.img", ROOT_COMPRESS)
    shutil.rmtree(root)
    shutil.rmtree(unpacked)
    shutil.rmtree(debs)


def _install_modules(unpacked: Path, root: Path) -> str:
    """Copy the modules of modules.txt and their dependencies; returns the kernel version."""
    (version_dir,) = (unpacked / "lib" / "modules").iterdir()
    version = version_dir.name
    run(["depmod", "--basedir", unpacked, version])  # the package leaves it to its postinst
    dependencies = _module_dependencies(version_dir / "modules.dep")
    patterns = [f"kernel/{p}" for p in recipe_lines(MODULES)]
    wanted = {m for m in dependencies if any(fnmatch.fnmatch(m, p) for p in patterns)}
    for pattern in patterns:
        if not any(fnmatch.fnmatch(m, pattern) for m in dependencies):
            raise BuildError(f"modules.txt: {pattern} matches no module of {version}")
    todo = list(wanted)
    while todo:
        for needed in dependencies[todo.pop()]:
            if needed not in wanted:
                wanted.add(needed)
                todo.append(needed)
    target_dir = root / "usr" / "lib" / "modules" / version
    for module in wanted:
        (target_dir / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(version_dir / module, target_dir / module)
    for index in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copy2(version_dir / index, target_dir / index)
    run(["depmod", "--basedir", root, version])
    log(f"kernel {version}: {len(wanted)} of {len(dependencies)} modules kept")
    return version


def _module_dependencies(modules_dep: Path) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    for line in modules_dep.read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[module] = needs.split()
    return deps


def _copy_boot_chain(unpacked: Path, efi: Path) -> None:
    """Debian's Secure Boot chain: shim (signed by Microsoft's UEFI CA) -> GRUB for CDs."""
    efi.mkdir()
    shutil.copy(unpacked / "usr/lib/shim/shimx64.efi.signed", efi / "BOOTX64.EFI")
    shutil.copy(unpacked / "usr/lib/shim/mmx64.efi.signed", efi / "mmx64.efi")
    # gcdx64 finds the medium by /.disk/info and reads /boot/grub/grub.cfg from it.
    shutil.copy(unpacked / "usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed", efi / "grubx64.efi")


def _prune(root: Path) -> None:
    for pattern in recipe_lines(PRUNE):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    # Compiled bytecode is kept (python starts faster); tests of the stdlib are not.
    for tests in root.glob("usr/lib/python3.11/test"):
        shutil.rmtree(tests)
    run(["chroot", root, "ldconfig"])
