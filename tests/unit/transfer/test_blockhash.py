import random

import pytest
from blake3 import blake3

from p2v.transfer import blockhash
from p2v.transfer.blockhash import BLOCK_SIZE, PIECE_SIZE, DiskDigest


def reference(data: bytes) -> str:
    """The digest computed the slow, obvious way over every byte."""
    blocks = []
    for b in range(0, len(data), BLOCK_SIZE):
        block = data[b : b + BLOCK_SIZE]
        pieces = [
            blake3(block[p : p + PIECE_SIZE]).digest() for p in range(0, len(block), PIECE_SIZE)
        ]
        blocks.append(blake3(b"".join(pieces)).digest())
    return blockhash.disk_digest(len(data), blocks)


def test_zero_blocks_use_the_digest_of_real_zeros():
    assert (
        blockhash.zero_block()
        == blake3(b"".join(blake3(bytes(PIECE_SIZE)).digest() for _ in range(64))).digest()
    )
    size = 2 * BLOCK_SIZE + 1000
    digest = DiskDigest(size)
    for i in range(3):
        digest.add(i, None)
    assert digest.hexdigest() == reference(bytes(size))


def test_blocks_may_arrive_in_any_order():
    rng = random.Random(1)
    data = rng.randbytes(3 * BLOCK_SIZE + 5)
    blocks = [data[i : i + BLOCK_SIZE] for i in range(0, len(data), BLOCK_SIZE)]
    digest = DiskDigest(len(data))
    for i in (2, 0, 3, 1):
        pieces = [
            blockhash.piece_digest(blocks[i][p : p + PIECE_SIZE])
            for p in range(0, len(blocks[i]), PIECE_SIZE)
        ]
        digest.add(i, blockhash.block_digest(pieces))
    assert digest.hexdigest() == reference(data)


def test_a_missing_block_is_an_error_not_a_wrong_digest():
    digest = DiskDigest(2 * BLOCK_SIZE)
    digest.add(0, None)
    with pytest.raises(ValueError, match="1 blocks"):
        digest.hexdigest()


def test_size_is_part_of_the_digest():
    assert reference(bytes(BLOCK_SIZE)) != reference(bytes(BLOCK_SIZE + 512))


@pytest.mark.parametrize("length", [PIECE_SIZE, PIECE_SIZE - 512, 1])
def test_zero_pieces_skip_hashing_but_not_correctness(length: int) -> None:
    """Zeros take a shortcut past hashing; one byte that is not zero, wherever it
    is, must still be hashed."""
    zeros = bytearray(length)
    assert blockhash.piece_digest(memoryview(zeros)) == blake3(zeros).digest()
    for where in {0, length // 2, length - 1}:
        almost = bytearray(length)
        almost[where] = 1
        assert blockhash.piece_digest(memoryview(almost)) == blake3(almost).digest()
    longer = bytes(PIECE_SIZE + 1)  # longer than a piece: never taken for one
    assert blockhash.piece_digest(longer) == blake3(longer).digest()
