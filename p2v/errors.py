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
