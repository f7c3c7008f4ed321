"""What the boot check makes of a console's text: booted, stuck, and the waits a
booted guest went through."""

from __future__ import annotations

from p2v.host.bootcheck import watch

RESUME_WAIT = (
    "Begin: Running /scripts/local-premount ... Begin: Waiting for suspend/resume device"
    " ... Begin: Running /scripts/local-block ... done.\r\ndone.\r\n"
    "Gave up waiting for suspend/resume device\r\ndone.\r\n"
)
START_JOB = "[ ***  ] A start job is running for /dev/disk/by-uuid/1234 (12s / 1min 30s)\r\n"
BOOTED = "\r\nP2V-TEST-BOOTED host=web-1\r\n"


def test_a_boot_that_waited_says_for_what_once_each() -> None:
    check = watch(lambda: RESUME_WAIT + START_JOB + START_JOB + BOOTED, 5, lambda: True)
    assert check.booted and check.line == "P2V-TEST-BOOTED host=web-1"
    assert check.waited == [
        "Gave up waiting for suspend/resume device",
        "A start job is running for /dev/disk/by-uuid/1234",
    ]


def test_a_boot_that_waited_for_nothing_has_no_waits() -> None:
    check = watch(lambda: "Begin: Mounting root file system ... done.\r\n" + BOOTED, 5,
                  lambda: True)  # fmt: skip
    assert check.booted and check.waited == []


def test_a_guest_that_gave_up_on_its_root_is_stuck() -> None:
    check = watch(lambda: "Gave up waiting for root file system device.\r\n(initramfs) ", 5,
                  lambda: True)  # fmt: skip
    assert not check.booted and check.line.startswith("stuck: Gave up waiting for root")
