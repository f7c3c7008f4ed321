"""Virtio drivers reachable at boot, without rebuilding the initramfs.

Rebuilding runs the guest's own tools, which means minutes inside an emulated
appliance. Instead each initramfs gets one more cpio archive appended: the kernel
unpacks every archive of an initramfs in turn, later files replacing earlier ones.
The extra archive holds the virtio modules with what they depend on, taken from the
guest's own /lib/modules, the guest's full module index, and the list of modules to
load early (initramfs-tools: conf/modules; dracut: modules-load.d). The guest's
configuration is also changed so that its next initramfs rebuild keeps them.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from imagebuilder.fixups import FixupReport, keep_original, replace_file
from imagebuilder.fixups.devices import INITRAMFS_TOOLS_RESUME
from imagebuilder.fixups.network import PINNED_PREFIX

# What a guest needs on a q35 machine with virtio disks and NICs.
VIRTIO_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net")
_SUFFIX = re.compile(r"\.ko(\.(xz|zst|gz))?$")
INITRAMFS_TOOLS_MODULES = "/etc/initramfs-tools/modules"
DRACUT_CONF = "/etc/dracut.conf.d/p2v-virtio.conf"


def module_name(path: str) -> str:
    """kernel/drivers/block/virtio_blk.ko.xz -> virtio_blk (dashes read as underscores)."""
    return _SUFFIX.sub("", path.rsplit("/", 1)[-1]).replace("-", "_")


def modules_to_add(modules_dep: str, builtin: str, wanted: tuple[str, ...]) -> list[str]:
    """Paths (relative to /lib/modules/VERSION) of the wanted modules that are not
    built into the kernel, with everything they depend on. Pure."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        path, _, needs = line.partition(":")
        if path:
            deps[path] = needs.split()
            by_name[module_name(path)] = path
    built_in = {module_name(line.strip()) for line in builtin.splitlines() if line.strip()}
    chosen: list[str] = []
    todo = [by_name[name] for name in wanted if name in by_name and name not in built_in]
    while todo:
        path = todo.pop(0)
        if path not in chosen:
            chosen.append(path)
            todo += [d for d in deps.get(path, []) if d not in chosen]
    return chosen


def fix_initramfs(g: Any) -> FixupReport:
    report = FixupReport("virtio drivers in the initramfs")
    tool = _initramfs_tool(g)
    if tool is None:
        report.changes.append("no initramfs-tools or dracut: left as is")
        return report
    for version, initrd in _kernels(g):
        moddir = f"/lib/modules/{version}"
        builtin = _read(g, f"{moddir}/modules.builtin")
        added = modules_to_add(_read(g, f"{moddir}/modules.dep"), builtin, VIRTIO_MODULES)
        names = [module_name(p) for p in added]
        with tempfile.TemporaryDirectory(prefix="p2v-initramfs-") as tmp:
            stage = Path(tmp) / "root"
            _stage(g, stage, moddir, added, tool, names)
            extra = Path(tmp) / "extra.cpio"
            _pack(stage, extra)
            image = Path(tmp) / "initrd"
            g.download(initrd, str(image))
            with open(image, "ab") as f:
                f.write(b"\0" * (-f.tell() % 4))  # each archive starts 4-byte aligned
                f.write(extra.read_bytes())
            keep_original(g, initrd, report)
            g.upload(str(image), initrd)
        loaded = ", ".join(names) if names else "all built into the kernel"
        report.changes.append(f"{initrd}: virtio drivers added ({loaded})")
    _keep_for_rebuilds(g, tool, report)
    return report


def _read(g: Any, path: str) -> str:
    return str(g.cat(path)) if g.is_file(path) else ""


def _initramfs_tool(g: Any) -> str | None:
    """Which tool builds this guest's initramfs: the one whose program is installed.
    Configuration alone misleads: a Debian server switched to dracut keeps
    /etc/initramfs-tools (its conffiles stay after the package is removed)."""
    if _installed(g, "update-initramfs"):
        return "initramfs-tools"
    if _installed(g, "dracut"):
        return "dracut"
    if g.is_dir("/etc/initramfs-tools"):
        return "initramfs-tools"
    if g.is_dir("/etc/dracut.conf.d"):
        return "dracut"
    return None


def _installed(g: Any, program: str) -> bool:
    return any(g.is_file(f"{d}/{program}") for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"))


# Where each distribution keeps the initramfs of kernel VERSION: Debian and Ubuntu
# (whichever tool made it), then Fedora, RHEL and SUSE.
INITRD_NAMES = ("/boot/initrd.img-{version}", "/boot/initramfs-{version}.img")


def _kernels(g: Any) -> list[tuple[str, str]]:
    found = []
    for version in sorted(g.ls("/lib/modules")):
        if not g.is_file(f"/lib/modules/{version}/modules.dep"):
            continue
        for name in INITRD_NAMES:
            if g.is_file(initrd := name.format(version=version)):
                found.append((version, initrd))
                break
    return found


def _stage(g: Any, stage: Path, moddir: str, added: list[str], tool: str, names: list[str]) -> None:
    # On a merged-/usr guest /lib is a symlink in the initramfs too: an archive entry
    # "lib" would replace it with a directory and hide every library.
    lib = g.readlink("/lib").lstrip("/") if g.is_symlink("/lib") else "lib"
    target = stage / lib / moddir.removeprefix("/lib/")
    target.mkdir(parents=True)
    # The guest's whole module index: it also describes every module already inside.
    for entry in g.ls(moddir):
        if entry.startswith("modules.") and g.is_file(f"{moddir}/{entry}"):
            g.download(f"{moddir}/{entry}", str(target / entry))
    for path in added:
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        g.download(f"{moddir}/{path}", str(target / path))
    if tool == "initramfs-tools":
        # conf/modules is what the initramfs loads first; it replaces the old list, so
        # it carries the guest's own list too.
        own = _read(g, INITRAMFS_TOOLS_MODULES).rstrip("\n")
        (stage / "conf").mkdir()
        listed = [own] if own else []
        (stage / "conf" / "modules").write_text("\n".join([*listed, *names]) + "\n")
        # The resume device as the devices fix-up named it (by UUID): the copy inside
        # still names the old disk (/dev/sda2), which the initramfs would wait for at
        # every boot, 30 s, before giving up.
        if g.is_file(INITRAMFS_TOOLS_RESUME):
            (stage / "conf" / "conf.d").mkdir()
            g.download(INITRAMFS_TOOLS_RESUME, str(stage / "conf" / "conf.d" / "resume"))
    else:
        (stage / "etc/modules-load.d").mkdir(parents=True)
        (stage / "etc/modules-load.d/p2v-virtio.conf").write_text("\n".join(names) + "\n")
    # NIC names pinned by MAC (network fix-up): udev in the initramfs names the NICs
    # too, so it must read the same rules as the installed system.
    for directory in ("/etc/systemd/network", "/etc/udev/rules.d"):
        if g.is_dir(directory):
            for entry in g.ls(directory):
                if entry.startswith(PINNED_PREFIX):
                    (stage / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
                    g.download(f"{directory}/{entry}", str(stage / directory.lstrip("/") / entry))


def _pack(stage: Path, output: Path) -> None:
    names = subprocess.run(
        ["find", ".", "-mindepth", "1"], cwd=stage, capture_output=True, text=True, check=True
    ).stdout
    with open(output, "wb") as out:
        subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
            cwd=stage, input="\n".join(sorted(names.split())).encode() + b"\n",
            stdout=out, check=True,
        )  # fmt: skip


def _keep_for_rebuilds(g: Any, tool: str, report: FixupReport) -> None:
    """So that the guest's next initramfs (a kernel update) has them too."""
    if tool == "initramfs-tools":
        path = INITRAMFS_TOOLS_MODULES
        text = _read(g, path)
        present = {line.split()[0] for line in text.splitlines() if line.split()}
        missing = [m for m in VIRTIO_MODULES if m not in present]
        if missing:
            new = text + ("" if text.endswith("\n") or not text else "\n")
            new += "# added by p2v: the disks and NICs are virtio now\n"
            replace_file(g, path, (new + "\n".join(missing) + "\n").encode(), report)
            report.changes.append(f"{path}: {', '.join(missing)} added")
    else:
        line = f'add_drivers+=" {" ".join(VIRTIO_MODULES)} "\n'
        replace_file(g, DRACUT_CONF, line.encode(), report)
        report.changes.append(f"{DRACUT_CONF}: virtio drivers added")
