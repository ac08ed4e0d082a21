"""Malicious-party harness for protocol tests (in the spirit of multi-party-sig's TestRule).

A rule names one party and rewrites its outgoing messages of one wire round; tests then assert a
clean abort: every honest party that aborted names exactly that party and the expected check,
and no honest party sent a message of a later round (attacks.md §0 CLEAN-ABORT)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from signer.encoding import decode, encode
from signer.errors import Check
from signer.protocol import flow
from signer.protocol.base import Message, SessionConfig
from signer.protocol.simulate import Mutator, Outcome


def configs(
    protocol: str, parties: Sequence[int], threshold: int, key_id: bytes = b"key"
) -> list[SessionConfig]:
    parties_for(parties)
    return flow.configs(protocol, parties, threshold, key_id)


def rewrite(
    wire_round: int,
    change: Callable[[Any], Any],
    *,
    to: int | None = None,
    broadcast: bool | None = None,
) -> Mutator:
    """Apply `change` to the decoded payload of the party's messages of `wire_round` (optionally
    only broadcast or only p2p ones).  With `to`, only the copy for that recipient changes: a
    broadcast is split into per-recipient copies, which is how a sender equivocates."""

    def mutate(message: Message) -> Message | list[Message] | None:
        if message.round != wire_round:
            return message
        if broadcast is not None and message.broadcast != broadcast:
            return message
        changed_payload = encode(change(decode(message.payload)))
        if to is None:
            return replace(message, payload=changed_payload)
        if not message.broadcast:
            return replace(message, payload=changed_payload) if message.recipient == to else message
        return [
            replace(message, recipient=j, payload=changed_payload if j == to else message.payload)
            for j in _RECIPIENTS[message.sender]
        ]

    return mutate


#: Filled by `parties_for`: who receives each sender's broadcasts.
_RECIPIENTS: dict[int, list[int]] = {}


def parties_for(parties: Sequence[int]) -> None:
    for i in parties:
        _RECIPIENTS[i] = [j for j in parties if j != i]


def raw_rewrite(
    wire_round: int, change: Callable[[bytes], bytes], *, broadcast: bool = True
) -> Mutator:
    """Byte-level rewrite (for encodings that well-formed values cannot produce)."""

    def mutate(message: Message) -> Message:
        if message.round != wire_round or message.broadcast != broadcast:
            return message
        return replace(message, payload=change(message.payload))

    return mutate


def assert_clean_abort(
    outcome: Outcome[Any],
    culprit: int,
    code: Check | frozenset[Check],
    honest: Sequence[int],
    *,
    last_round: int | None = None,
    everyone: bool = True,
) -> None:
    """Honest parties abort naming exactly `culprit` with `code` (or one of a set of codes, where
    which check trips first depends on random values) — all of them if `everyone` —
    none of them output anything, and none sent a message of a wire round after `last_round`."""
    assert not any(i in outcome.results for i in honest), "an honest party produced output"
    aborted = [i for i in honest if i in outcome.aborts]
    assert aborted, "no honest party aborted"
    if everyone:
        assert sorted(aborted) == sorted(honest), f"only {aborted} aborted"
    for i in aborted:
        abort = outcome.aborts[i]
        assert abort.culprits == frozenset({culprit}), (i, abort)
        allowed = code if isinstance(code, frozenset) else frozenset({code})
        assert abort.code in allowed, (i, abort)
    if last_round is not None:
        for i in honest:
            late = [m.round for m in outcome.sent.get(i, []) if m.round > last_round]
            assert not late, f"party {i} sent messages of rounds {late}"


def assert_no_honest_blamed(outcome: Outcome[Any], honest: Sequence[int]) -> None:
    for i in honest:
        if i in outcome.aborts:
            assert outcome.aborts[i].culprits <= frozenset(set(range(1, 100)) - set(honest)), (
                outcome.aborts[i]
            )
