"""One exception hierarchy: the CLI prints `str(error)` as one line and exits with the
error's own code, listed in EXIT_CODES (`p2v --help` and the README show it)."""

from __future__ import annotations

from typing import Any


class P2VError(Exception):
    """Base of every error the toolkit reports to a user."""

    exit_code = 1
    #: The command that goes on from where the job stopped, when one can.
    resume: str | None = None


class MissingComponent(P2VError):
    """A program, library or firmware file the toolkit needs is not installed."""

    exit_code = 3

    def __init__(self, component: str, fix: str = "run `make setup`") -> None:
        super().__init__(f"{component} is missing; {fix}")
        self.component = component
        self.fix = fix


class ComponentError(P2VError):
    """A component is installed but does not work (a daemon that does not answer, ...)."""

    exit_code = 4


class InputError(P2VError):
    """The user asked for something that cannot be done as given (bad path, bad size, ...)."""

    exit_code = 2


class TransferError(P2VError):
    """A copy failed part-way; what was done is kept and the job can be resumed."""

    exit_code = 5

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        if job_id:
            self.resume = f"p2v copy --resume {job_id}"


class AgentError(P2VError):
    """The agent cannot be reached, stopped answering, refuses us, or speaks another
    version."""

    exit_code = 6


class PlanError(P2VError):
    """The guest cannot be converted as asked; nothing was copied."""

    exit_code = 7


class BootCheckError(P2VError):
    """The guest was converted (disks copied, domain written or defined) but did not
    boot within the check."""

    exit_code = 8


class BusyError(P2VError):
    """Another job that is still running holds what was asked for: the job itself
    (a second --resume) or the virtual machine it acts on. Nothing was done."""

    exit_code = 9


class MigrationError(P2VError):
    """A migration did not finish: it was cancelled, timed out, or a host or the link
    failed. The message says where the guest runs now; `record` what was measured."""

    exit_code = 10

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record or {}


class BackupMismatch(P2VError):
    """A backup does not read back as it was recorded (a restore, a verify)."""

    exit_code = 11


class IdentityClash(P2VError):
    """Clones share an identity, or one still has its golden's (`p2v clones check`)."""

    exit_code = 12


def system_error(error: OSError) -> P2VError:
    """What the system refused (a path that cannot be made, a full disk): not a bug
    of ours, so one line like every other error, naming the file."""
    where = f": {error.filename}" if error.filename else ""
    return P2VError(f"{error.strerror or error}{where}")


INTERRUPTED = 130

EXIT_CODES = f"""\
exit codes:
  0    done
  1    failed (a message says why)
  {InputError.exit_code}    refused: bad arguments, paths or values; nothing was done or recorded
  {MissingComponent.exit_code}    a program, library or firmware the toolkit needs is not installed
  {ComponentError.exit_code}    a component does not work or answer (libvirt, libguestfs, QEMU)
  {TransferError.exit_code}    a copy stopped part-way; what it copied is kept: resume the job
  {AgentError.exit_code}    the agent cannot be reached, stopped answering or refused the secret
  {PlanError.exit_code}    the guest cannot be converted as asked (no OS, too little space, ...);
       nothing was copied
  {BootCheckError.exit_code}    the guest was converted but did not boot within the check
  {BusyError.exit_code}    another running job holds the job or virtual machine asked for: try again
       once it ends
  {MigrationError.exit_code}   a migration did not finish (cancelled, --timeout, a host or the link
       failed); the message says where the guest runs now
  {BackupMismatch.exit_code}   a backup does not read back as recorded (restore, backup verify)
  {IdentityClash.exit_code}   clones share an identity, or one still has its golden's (clones check)
  {INTERRUPTED}  interrupted (Ctrl-C); a job that had started can be resumed
A job that stops after it started says how to go on: `p2v convert --resume JOB`,
`p2v copy --resume JOB`, `p2v migrate --resume JOB`, `p2v backup --resume JOB`.
"""
