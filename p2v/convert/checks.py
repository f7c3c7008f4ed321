"""What a conversion checks before it is recorded in the journal.

Every refusal that does not need the guest inspected is found here: bad values, a
source that cannot be read or reached, a target directory that cannot be made or
written, a libvirt URI that does not answer, targets or a domain that exist. A
refused command leaves no job and nothing on disk, and a dry run refuses what the
real run would.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from imagebuilder.domain import network_kind
from imagebuilder.profile import ProfileError
from p2v.convert import targets
from p2v.errors import InputError
from p2v.host import virt
from p2v.host.virt import LOCAL_URIS

if TYPE_CHECKING:
    from p2v.convert.pipeline import ConvertOptions


def check_values(options: ConvertOptions) -> None:
    try:
        options.overrides.check()
    except ProfileError as e:
        raise InputError(str(e)) from None
    try:
        network_kind(options.destination.network)
    except ValueError:
        raise InputError(
            f"--network {options.destination.network}: use user, network:NAME or bridge:NAME"
        ) from None
    if options.start and options.output_dir is not None:
        raise InputError("--start needs --target kvm (--output-dir only writes files)")


@contextlib.contextmanager
def target_directory(path: Path, keep: bool) -> Iterator[None]:
    """Make `path` (and its missing parents) and prove it writable; what was made is
    removed again when the check fails, or when `keep` is false (a dry run)."""
    made: list[Path] = []
    for parent in [*reversed(path.parents), path]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{parent} is not a directory: it cannot hold {path}")
            continue
        try:
            parent.mkdir()
        except OSError as e:
            _remove(made)
            raise InputError(f"cannot make the directory {path}: {e.strerror}") from None
        made.append(parent)
    try:
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as e:
            raise InputError(f"cannot write in {path}: {e.strerror}") from None
        yield
    except BaseException:
        _remove(made)
        raise
    if not keep:
        _remove(made)


def _remove(made: list[Path]) -> None:
    for path in reversed(made):
        with contextlib.suppress(OSError):
            path.rmdir()


def qemu_can_reach(options: ConvertOptions) -> None:
    """The privileged libvirt daemon runs QEMU as its own user: it must be able to walk
    to the disks."""
    booting = options.verify_boot or options.start or options.output_dir is None
    if not booting or os.geteuid() != 0 or options.uri not in LOCAL_URIS or options.in_pool:
        return
    target = options.target_dir
    for parent in target.resolve().parents:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            raise InputError(
                f"libvirt's QEMU user cannot reach {target}: {parent} is not "
                f"searchable by others (chmod o+x {parent}, or choose another directory)"
            )


def needs_libvirt(options: ConvertOptions) -> bool:
    return options.output_dir is None or options.verify_boot or options.start


def libvirt_answers(options: ConvertOptions) -> None:
    """The URI the guest is defined in or boot-checked on answers (ComponentError)."""
    if needs_libvirt(options):
        virt.connect(options.uri, options.connect_timeout).close()


def free_targets(
    name: str,
    disks: list[str],
    options: ConvertOptions,
    own: Collection[str] = (),
    own_domain: bool = False,
) -> None:
    """Refuse target disks and a domain that exist, unless --overwrite; with it, refuse
    a domain that runs. `own` and `own_domain`: what this job made itself before an
    interruption, which it may replace."""
    timeout = options.connect_timeout
    existing = [t for t in disks if t not in own and targets.exists(t, timeout)]
    if existing and not options.overwrite:
        raise InputError(f"{', '.join(existing)} already exist (--overwrite replaces them)")
    if options.output_dir is not None:
        return
    conn = virt.connect(options.uri, options.connect_timeout)
    try:
        domain = virt.lookup(conn, name)
        if domain is None:
            return
        if domain.isActive():
            raise InputError(
                f"{options.uri} has a running domain {name!r}: stop it first, or --name another"
            )
        if not (options.overwrite or own_domain):
            raise InputError(
                f"{options.uri} already has a domain {name!r} (--name another, or "
                "--overwrite to replace it)"
            )
    finally:
        conn.close()
