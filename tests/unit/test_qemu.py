import pytest

from p2v.qemu import parse_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n", (10, 0, 2)),
        ("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)", (7, 2, 15)),
        ("qemu-img version 9.1\nCopyright", (9, 1, 0)),
    ],
)
def test_parse_version(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected


def test_parse_version_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_version("not qemu")
