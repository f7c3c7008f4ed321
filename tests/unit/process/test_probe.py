"""The probe a process move runs on each machine, run here on a real process tree:
what it names is what the checks refuse or move."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from p2v.process import probe

PROBE = Path(probe.__file__)


def test_it_describes_a_tree_its_files_and_its_connections(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    log = tmp_path / "svc.log"
    program = textwrap.dedent(f"""
        import os, socket, sys, time
        log = open({str(log)!r}, "a"); log.write("up\\n"); log.flush()
        conn = socket.create_connection(("127.0.0.1", {port}))
        child = os.fork()
        if child == 0:
            time.sleep(60); os._exit(0)
        print("ready", flush=True)
        time.sleep(60)
    """)  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        accepted, _ = server.accept()
        out = subprocess.run(
            [sys.executable, str(PROBE), "source", str(proc.pid), str(tmp_path / "work")],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        found = json.loads(out)
        assert found["pid"] == proc.pid and len(found["pids"]) == 2
        assert set(found["pids"]) <= set(found["tids"]) and found["start"] > 0
        assert found["unit"] is None  # not a service's main process
        assert found["files"][str(log)]["size"] == 3
        assert any(f"127.0.0.1:{port}" in c for c in found["established"])
        assert any(path.endswith(Path(sys.executable).name) or "python" in path
                   for path in found["binaries"])  # fmt: skip
        assert found["rss"] > 0 and found["free"] > 0 and found["listening"] == []
        there = json.loads(subprocess.run(
            [sys.executable, str(PROBE), "target", str(tmp_path / "w2"), str(log), "/nonexistent"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout)  # fmt: skip
        assert list(there["paths"]) == [str(log)]
        assert there["paths"][str(log)]["sha256"] == found["files"][str(log)]["sha256"]
        assert proc.pid in there["pids"] and port in there["listening"]
        accepted.close()
    finally:
        proc.kill()
        proc.wait()
        server.close()


def test_a_process_that_is_not_there_is_named(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(PROBE), "source", "999999999", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    assert json.loads(out) == {"error": "no process 999999999"}
