"""One exception hierarchy: the CLI prints `str(error)` as one line and exits non-zero."""


class P2VError(Exception):
    """Base of every error the toolkit reports to a user."""

    exit_code = 1


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
        if job_id:
            message += f"; resume with `p2v copy --resume {job_id}`"
        super().__init__(message)
        self.job_id = job_id
