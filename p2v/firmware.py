"""Where the UEFI firmware (OVMF) for x86_64 guests lives on this host."""

from pathlib import Path

from p2v.errors import MissingComponent

OVMF_DIR = Path("/usr/share/OVMF")
# The 4 MiB builds: what current libvirt and QEMU pick for q35 guests.
OVMF_CODE = OVMF_DIR / "OVMF_CODE_4M.fd"
OVMF_VARS = OVMF_DIR / "OVMF_VARS_4M.fd"


def _present(code: Path, variables: Path, what: str) -> tuple[Path, Path]:
    for path in (code, variables):
        if not path.exists():
            raise MissingComponent(f"{what} {path}", "install ovmf")
    return code, variables


def ovmf() -> tuple[Path, Path]:
    """(code, vars template) of OVMF, or MissingComponent."""
    return _present(OVMF_CODE, OVMF_VARS, "UEFI firmware")


# OVMF that enforces Secure Boot (needs SMM), with Microsoft's keys enrolled: it starts
# Debian's shim, signed by Microsoft's UEFI CA, and refuses unsigned loaders.
OVMF_SECURE_CODE = OVMF_DIR / "OVMF_CODE_4M.secboot.fd"
OVMF_SECURE_VARS = OVMF_DIR / "OVMF_VARS_4M.ms.fd"


def ovmf_secure_boot() -> tuple[Path, Path]:
    """(code, vars template) of OVMF with Secure Boot on, or MissingComponent."""
    return _present(OVMF_SECURE_CODE, OVMF_SECURE_VARS, "UEFI Secure Boot firmware")
