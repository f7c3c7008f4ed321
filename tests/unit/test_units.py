import pytest

from p2v.errors import InputError
from p2v.units import format_size, parse_size


@pytest.mark.parametrize(
    "text,size",
    [
        ("4096", 4096),
        ("64K", 65536),
        ("512M", 512 << 20),
        ("4G", 4 << 30),
        ("1.5G", 3 << 29),
        ("10MiB", 10 << 20),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_parse_size_refuses_nonsense():
    with pytest.raises(InputError, match="not a size"):
        parse_size("lots")


def test_format_size():
    assert format_size(512) == "512 B"
    assert format_size(3 << 29) == "1.5 GiB"
