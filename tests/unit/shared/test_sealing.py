"""Sealed payout accounts: round trip, and never the same nonce twice (in one process or after a fork)."""

from __future__ import annotations

import base64
import multiprocessing

import pytest

from shared.sealing import NONCE_BYTES, Sealer, SealError


def nonce_of(token: str) -> bytes:
    return base64.urlsafe_b64decode(token.encode())[:NONCE_BYTES]


def test_an_account_sealed_opens_to_itself_and_not_under_another_secret() -> None:
    sealer = Sealer("one secret, at least thirty-two characters long")
    token = sealer.seal("MY-ACCOUNT-0042")
    assert "MY-ACCOUNT-0042" not in token
    assert sealer.open(token) == "MY-ACCOUNT-0042"
    with pytest.raises(SealError, match="could not be opened"):
        Sealer("another secret, at least thirty-two characters").open(token)


def test_nonces_stay_distinct_across_many_reads_of_the_pool() -> None:
    sealer = Sealer("one secret, at least thirty-two characters long")
    nonces = [nonce_of(sealer.seal("ACC")) for _ in range(10_000)]  # more than two reads of 4,096
    assert len(set(nonces)) == len(nonces)


def _child_nonce(sealer: Sealer, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(nonce_of(sealer.seal("ACC")))


def test_a_forked_child_never_reuses_the_parents_next_nonces() -> None:
    sealer = Sealer("one secret, at least thirty-two characters long")
    sealer.seal("ACC")  # the parent now holds a pool of unread nonces
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_nonce, args=(sealer, queue))
    child.start()
    from_child = queue.get(timeout=30)
    child.join(timeout=30)
    parent_next = {nonce_of(sealer.seal("ACC")) for _ in range(8)}
    assert from_child not in parent_next
