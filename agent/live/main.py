"""`p2v-agent live`: the live medium's main program, started by its init.

Order matters: the network comes first (so the inventory lists the addresses), the
secret before anything is served, the screen once the port is open.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from pathlib import Path

from agent import __version__
from agent.inventory.collect import collect
from agent.live import announce, network
from agent.live.options import LiveOptions, OptionError, parse_cmdline
from agent.live.screen import Consoles, Status, render
from agent.live.secret import find_secret
from agent.protocol import SecretError, fingerprint
from agent.serve import ExportServer, ServeError, exportable_disks

CMDLINE = Path("/proc/cmdline")
ADDRESS_CHECK_SECONDS = 10.0


def run(cmdline: Path = CMDLINE) -> int:
    consoles = Consoles()
    try:
        options = parse_cmdline(cmdline.read_text())
    except OptionError as e:
        return _stop_here(consoles, f"kernel command line: {e}")
    try:
        return _serve(options, consoles)
    except (OptionError, network.NetworkError, SecretError, ServeError, OSError) as e:
        return _stop_here(consoles, str(e))


def _serve(options: LiveOptions, consoles: Consoles) -> int:
    links = network.physical_links()
    network.configure(options.ip, network.select_links(links, options.ip.device), consoles.say)
    found = network.wait_for_address(links) if options.ip.mode != "off" else {}
    secret = find_secret(options.secret)
    names = list(options.disks) if options.disks is not None else None
    inventory = collect(disks=names)
    disks = exportable_disks(inventory, names)
    server = ExportServer(inventory, disks, secret.key, options.listen, on_event=consoles.say)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    ended: list[int] = []  # nbdkit's status, should it stop by itself
    try:
        status = Status(
            version=__version__,
            inventory=inventory,
            listen=options.listen,
            addresses={n: a for n, a in found.items() if a},
            exported=disks,
            fingerprint=fingerprint(secret.key),
            secret_source=secret.source,
            shown_secret=secret.key if secret.generated else None,
            server=options.server,
        )
        consoles.write(render(status))
        if options.server:
            message = announce.announcement(
                inventory, options.listen.port, disks, status.fingerprint
            )
            threading.Thread(
                target=announce.keep_announcing,
                args=(options.server, message, consoles.say, stop),
                daemon=True,
            ).start()

        def watch() -> None:
            ended.append(server.wait())
            stop.set()

        threading.Thread(target=watch, daemon=True).start()
        # A lease that comes late, or changes, is shown: the operator reads the screen.
        while not stop.wait(ADDRESS_CHECK_SECONDS):
            now = {n: a for n, a in network.addresses(links).items() if a}
            if now != status.addresses:
                status = dataclasses.replace(status, addresses=now)
                consoles.write(render(status))
    finally:
        server.stop()
    if ended:  # nbdkit stopped by itself: init starts the agent again
        consoles.say(f"the NBD server stopped (status {ended[0]})")
        return 1
    return 0


def _stop_here(consoles: Consoles, problem: str) -> int:
    """Say what is wrong and wait for the operator (reboot with other options): an agent
    that restarted in a loop would only scroll the message away."""
    consoles.say(f"cannot start: {problem}")
    consoles.say("fix the boot options (press e in the boot menu) and restart the machine")
    while True:
        time.sleep(3600)
