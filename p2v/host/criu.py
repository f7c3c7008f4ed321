"""CRIU (checkpoint/restore in userspace) on a machine reached over SSH: checks,
memory pre-dump passes, the final dump and the restore. We steer; CRIU freezes,
writes and restores.

The final dump holds the program frozen in CRIU's post-dump action script until p2v
says `go` (it runs on the destination) or anything else: then the script returns
non-zero and CRIU thaws the program where it was, with its connections. The script
also moves the service address off the source, and back on an abort. p2v's answer
comes over the SSH session that runs the dump, so a p2v that dies (its session
closes) is an abort, as is no answer within DECISION_TIMEOUT_S.
"""

from __future__ import annotations

import json
import selectors
import shlex
import subprocess
import time
from dataclasses import dataclass
from typing import IO, Any

from p2v.errors import ComponentError
from p2v.host.ssh import Shell

CHECK_TIMEOUT_S = 60.0
DECISION_TIMEOUT_S = 300
# A restore that has not ended by then is stopped (CRIU then removes what it made):
# the source's hook is still waiting, well within DECISION_TIMEOUT_S, and thaws it.
RESTORE_TIMEOUT_S = 120

# Runs in the work directory; its `final.env` says what to move and release, and
# `final.files` which open files (relative to /) go along. Once CRIU has written the
# images, the hook sends them and those files, with their digests, as one tar on the
# status pipe: "P2V-DUMPED SIZE", then SIZE bytes. p2v streams it straight into the
# restore on the destination: the frozen program waits for no other round trip.
HOOK = r"""#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0
cd "$(dirname "$0")" || exit 1
. ./final.env
here=${PWD#/}
[ -z "$ADDRESS" ] || ip addr del "$ADDRESS" dev "$SOURCE_DEV" || exit 1
back() {
	[ -z "$ADDRESS" ] || ip addr add "$ADDRESS" dev "$SOURCE_DEV"
	exit 1
}
# The images whole (their `parent` link to the last pass too), not CRIU's log, which
# it still writes.
{ find "/$here/final" -type f ! -name dump.log | sed 's|^/||'; cat final.files; } >final.list ||
	back
(cd / && tr '\n' '\0' <"/$here/final.list" | xargs -0 sha256sum) >final.sha256 || back
tar -C / -cf final.tar --exclude "$here/final/dump.log" "$here/final" "$here/final.sha256" \
	-T final.files || back
# A p2v that stopped reading must not hold the program frozen: the copy has the
# decision's time limit too.
{ echo "P2V-DUMPED $(stat -c %s final.tar)"; timeout "$DECISION_TIMEOUT" cat final.tar; } \
	>status || back
decision=$(timeout "$DECISION_TIMEOUT" cat decision)
if [ "$decision" = go ]; then
	# A service's systemd must not start it again once CRIU ends it here.
	[ -z "$UNIT" ] || systemctl stop --no-block "$UNIT"
	exit 0
fi
back
"""

# Runs the final dump with the hook; relays the hook's "dumped" to p2v and p2v's
# decision (its first line; none at all is an abort) to the hook.
FINAL = r"""#!/bin/sh
cd "$1" || exit 1
shift
rm -f status decision
mkfifo status decision || exit 1
cat status &
exec 3<&0
( if read -r line <&3; then echo "$line"; else echo abort; fi >decision ) &
criu dump "$@" --action-script "$PWD/hook" -o dump.log
status=$?
# A dump that failed before the hook ran: open the pipes once, so that the relays
# blocked on them end.
exec 5<>status 6<>decision
exec 5>&- 6>&-
echo "P2V-DUMP-EXIT $status"
"""


@dataclass(frozen=True)
class PassStats:
    pages: int  # written by this pass
    frozen_ms: float
    seconds: float


def check(shell: Shell, live: bool) -> list[str]:
    """What keeps CRIU from working on this machine, in words (none: it works)."""
    features = " mem_dirty_track" if live else ""
    script = (
        "command -v criu >/dev/null || { echo 'P2V-MISSING criu'; exit 0; }; "
        "command -v crit >/dev/null || echo 'P2V-MISSING crit'; "
        "command -v python3 >/dev/null || echo 'P2V-MISSING python3'; "
        "criu check 2>&1 | tail -n 3; "
        f"for f in{features}; do criu check --feature $f 2>&1 | tail -n 1; done"
    )
    _, out, _ = shell.attempt(script, CHECK_TIMEOUT_S)
    problems = []
    for line in out.splitlines():
        if line.startswith("P2V-MISSING "):
            problems.append(f"{line.split()[1]} is not installed (Debian: apt install criu)")
        elif line.startswith(("Error", "Warn")) or "not supported" in line:
            problems.append(f"criu check: {line.strip()}")
    if not any(line.strip() == "Looks good." for line in out.splitlines()) and not problems:
        problems.append(f"criu check did not say 'Looks good.': {out.strip()[-200:]}")
    return problems


def install(shell: Shell, workdir: str, env: dict[str, str], files: list[str]) -> None:
    """The work directory, the hook and the final dump's wrapper, and what the hook
    is to move (`files`: absolute paths) and release."""
    shell.run(install_script(workdir, env, files), CHECK_TIMEOUT_S)


def install_script(workdir: str, env: dict[str, str], files: list[str]) -> str:
    env = {**env, "DECISION_TIMEOUT": str(DECISION_TIMEOUT_S)}
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())
    listed = "".join(f"{path.lstrip('/')}\n" for path in files)
    return (
        f"mkdir -p {shlex.quote(workdir)} && cd {shlex.quote(workdir)} && "
        f"cat >hook <<'P2V_EOF' &&\n{HOOK}P2V_EOF\n"
        f"cat >final-dump <<'P2V_EOF' &&\n{FINAL}P2V_EOF\n"
        f"cat >final.env <<'P2V_EOF' &&\n{text}P2V_EOF\n"
        f"cat >final.files <<'P2V_EOF' &&\n{listed}P2V_EOF\n"
        "chmod 0700 hook final-dump"
    )


def pre_dump(shell: Shell, workdir: str, pid: int, name: str, prev: str | None,
             timeout: float) -> PassStats:  # fmt: skip
    """One pass: the memory written into WORKDIR/NAME while the program runs on,
    only what changed since the pass `prev`."""
    parent = f" --prev-images-dir ../{shlex.quote(prev)}" if prev else ""
    q = shlex.quote
    script = (
        f"cd {q(workdir)} && rm -rf {q(name)} && mkdir {q(name)} && "
        f"criu pre-dump -t {pid} -D {q(name)}{parent} --track-mem -o pre-dump.log "
        f"|| {{ grep -E '^Error' {q(name)}/pre-dump.log | tail -n 3 >&2; exit 1; }}; "
        f"crit show {q(name)}/stats-dump"
    )
    started = time.monotonic()
    dump = _entry(shell.run(script, timeout))
    if not dump:
        raise ComponentError(f"{shell.peer}: crit could not read the pass's statistics")
    return PassStats(int(dump.get("pages_written", 0)), dump.get("frozen_time", 0) / 1000,
                     time.monotonic() - started)  # fmt: skip


class FinalDump:
    """The final dump, running until `decide` is answered."""

    def __init__(self, shell: Shell, workdir: str, pid: int, prev: str | None,
                 keep_tcp: bool) -> None:  # fmt: skip
        args = ["-t", str(pid), "-D", "final", "--track-mem"]
        if prev:
            args += ["--prev-images-dir", f"../{prev}"]
        if keep_tcp:
            args.append("--tcp-established")
        self.shell, self.workdir = shell, workdir
        script = (
            f"cd {shlex.quote(workdir)} && rm -rf final && mkdir final && "
            f"exec ./final-dump {shlex.quote(workdir)} {shlex.join(args)}"
        )
        self.started = time.monotonic()
        # Unbuffered: the lines are read as they come, with a time limit.
        self.proc = shell.popen(script, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, bufsize=0)  # fmt: skip

    def dumped(self, timeout: float) -> bytes:
        """Once CRIU has written everything and waits for the decision: the tar of the
        images and the files that go along. Else the dump failed (the program runs on
        where it was), and this says why."""
        out: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        deadline = time.monotonic() + timeout
        line = _readline(out, self.proc, timeout).decode(errors="replace").strip()
        if line.startswith("P2V-DUMPED "):
            size = int(line.split()[1])
            data = _read(out, size, deadline)
            if len(data) == size:
                return data
            line = f"{len(data)} of {size} bytes of its images came"
        self.proc.kill()
        why = self._log_errors()
        raise ComponentError(f"{self.shell.peer}: CRIU's dump failed ({line or 'no answer'}); "
                             f"the program runs on there{': ' + why if why else ''}")  # fmt: skip

    def decide(self, go: bool, timeout: float) -> int:
        """Tell the hook; CRIU's exit status once it has ended (go) or thawed the
        program (anything else)."""
        stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        try:
            stdin.write(b"go\n" if go else b"abort\n")
            stdin.close()
        except OSError:
            pass
        out: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        rest = _readline(out, self.proc, timeout).decode(errors="replace").strip()
        self.abandon()
        return int(rest.split()[-1]) if rest.startswith("P2V-DUMP-EXIT") else -1

    def abandon(self) -> None:
        """Close the session: the hook reads no decision and thaws the program."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def _log_errors(self) -> str:
        code, out, _ = self.shell.attempt(
            f"grep -E '^Error' {shlex.quote(self.workdir)}/final/dump.log | tail -n 3", 30
        )
        return "; ".join(out.split("\n")).strip("; ") if code == 0 else ""


def _read(out: IO[bytes], size: int, deadline: float) -> bytes:
    """`size` bytes, or fewer once `deadline` passes or the session ends."""
    data = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(out, selectors.EVENT_READ)
        while len(data) < size and sel.select(max(0.0, deadline - time.monotonic())):
            chunk = out.read(min(size - len(data), 1 << 20))
            if not chunk:
                break
            data += chunk
    return bytes(data)


def _readline(out: IO[bytes], proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line, or b"" once `timeout` passes or the session ends."""
    deadline = time.monotonic() + timeout
    line = b""
    with selectors.DefaultSelector() as sel:
        sel.register(out, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            byte = out.read(1)
            if not byte:
                break
            if byte == b"\n":
                return line
            line += byte
    return line


def restore_script(workdir: str, keep_tcp: bool, address: str | None, dev: str | None,
                   tids: list[int], files: list[str]) -> str:  # fmt: skip
    """On the destination: unpack the hook's tar (stdin), check it against its
    digests, take the address, restore the program left stopped (p2v continues it
    once the source has released it). Prints P2V-RESTORED. The destination's own
    copies of `files` (absolute paths) are kept aside first; a failure puts them
    back and gives the address back."""
    q = shlex.quote
    w = workdir.rstrip("/")
    tcp = " --tcp-established" if keep_tcp else ""
    take = f"ip addr add {q(address)} dev {q(dev or '')} && " if address else ""
    give = f"ip addr del {q(address)} dev {q(dev or '')} 2>/dev/null; " if address else ""
    # The IDs were free at the checks; one taken since then fails the restore here, so
    # that whatever is at them after a failed restore is CRIU's (discard_script).
    ids = " ".join(str(t) for t in tids)
    keep = " ".join(q(f) for f in files)
    return (
        f'{{ for t in {ids}; do [ ! -d /proc/$t ] || {{ echo "ID $t is in use here now" >&2; '
        "exit 1; }; done && "
        f"mkdir -p {q(w)}/kept && : >{q(w)}/kept.new && "
        f'cd / && for f in {keep}; do if [ -e "$f" ]; then cp -a --parents "${{f#/}}" '
        f'{q(w)}/kept/; else echo "$f" >>{q(w)}/kept.new; fi; done && '
        f"tar -C / -xf - && cd / && sha256sum --quiet --strict -c {q(w.lstrip('/'))}"
        f"/final.sha256 >&2 && cd {q(w)} && {take}"
        f"{{ timeout -k 5 {RESTORE_TIMEOUT_S} criu restore -D final --restore-detached "
        f"--leave-stopped{tcp} -o restore.log "
        f"|| {{ grep -E '^Error' final/restore.log | tail -n 3 >&2; false; }}; }}; }} "
        f"|| {{ {give}{_put_back(w)}; exit 1; }}; echo P2V-RESTORED"
    )


def _put_back(workdir: str) -> str:
    """The destination's own copies of the files a failed move brought, back in place;
    those it had not, removed."""
    q = shlex.quote
    return (
        f"if [ -d {q(workdir)}/kept ]; then (cd {q(workdir)}/kept && find . ! -type d | "
        'while read -r f; do mv -f "$f" "/${f#./}"; done); fi; '
        f"[ ! -f {q(workdir)}/kept.new ] || xargs -r -d '\\n' rm -f <{q(workdir)}/kept.new"
    )


def continue_script(pids: list[int], address: str | None, dev: str | None) -> str:
    """On the destination: the restored program continues; neighbours learn where its
    address is now (gratuitous ARP, in the background)."""
    script = f"kill -CONT {' '.join(str(p) for p in pids)}"
    if address and ":" not in address:
        ip = address.split("/")[0]
        # Only arping itself in the background, its output nowhere: the session
        # ends without waiting for it.
        script += (f"; if command -v arping >/dev/null; then setsid arping -U -c 2 -I "
                   f"{shlex.quote(dev or '')} {ip} </dev/null >/dev/null 2>&1 & fi")  # fmt: skip
    return script


def discard_script(workdir: str, pids: list[int], address: str | None, dev: str | None) -> str:
    """On the destination, after a failed or abandoned restore: end what CRIU made of
    the tree there (those IDs were free just before it began), drop the address, put
    its own files back."""
    script = f"kill -KILL {' '.join(str(p) for p in pids)} 2>/dev/null"
    if address:
        script += f"; ip addr del {shlex.quote(address)} dev {shlex.quote(dev or '')} 2>/dev/null"
    return f"{script}; {_put_back(workdir.rstrip('/'))}; true"


def alive(shell: Shell, pid: int, start: int) -> bool:
    """Whether the process `pid` that started at `start` still runs there (a PID is
    used again; with its start time it names one process)."""
    code, out, _ = shell.attempt(f"cat /proc/{pid}/stat", 30)
    if code != 0:
        return False
    return int(out.rsplit(")", 1)[1].split()[19]) == start


def stats(shell: Shell, path: str) -> dict[str, Any]:
    """CRIU's statistics file (stats-dump, stats-restore) as a dict; {} if unreadable."""
    code, out, _ = shell.attempt(f"crit show {shlex.quote(path)}", 30)
    return _entry(out) if code == 0 else {}


def _entry(text: str) -> dict[str, Any]:
    """The dump or restore figures of `crit show`'s JSON of a stats file ({}: none)."""
    try:
        entry = json.loads(text)["entries"][0]
    except (ValueError, KeyError, IndexError):
        return {}
    return dict(entry.get("dump") or entry.get("restore") or {})
