"""In-process network for running protocol parties: tests, benchmarks and the demo.

Messages are delivered one at a time in a shuffled order (reproducible from a seed), optionally
duplicated; a `Mutator` per party rewrites, multiplies or drops that party's outgoing messages
(the malicious-party harness).  Parties that abort stop — at `start` or on any message, and
whatever went wrong inside them (base.py: every failure is a terminal `ProtocolAbort`); the
outcome records results, aborts, messages a party refused without failing (`MessageRefused`:
a sender outside the session), parties left waiting, and every message each party sent (a spy
transport, attacks.md §0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from signer.errors import Check, TesseraError
from signer.protocol.base import Message, MessageRefused, Party, ProtocolAbort

R = TypeVar("R")

Mutator = Callable[[Message], "Message | list[Message] | None"]


class Stalled(TesseraError):
    """Nobody aborted, yet parties wait for messages that never come (dropped or withheld)."""

    def __init__(self, waiting: Sequence[int]) -> None:
        self.waiting = tuple(waiting)
        super().__init__(
            f"{Check.LENGTH.value}: parties {list(waiting)} wait for messages (timeout)"
        )


@dataclass
class Outcome(Generic[R]):
    results: dict[int, R] = field(default_factory=dict)
    aborts: dict[int, ProtocolAbort] = field(default_factory=dict)
    waiting: list[int] = field(default_factory=list)
    sent: dict[int, list[Message]] = field(default_factory=dict)
    refused: list[tuple[int, MessageRefused]] = field(default_factory=list)  # (recipient, why)


class _Shuffle:
    """Deterministic choice from a seed (hash-based; the `random` module stays out of signer/)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed.to_bytes(16, "big", signed=True)
        self._counter = 0

    def below(self, n: int) -> int:
        self._counter += 1
        digest = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
        return int.from_bytes(digest, "big") % n


def run(
    parties: Sequence[Party[R]],
    *,
    seed: int = 0,
    mutators: Mapping[int, Mutator] | None = None,
    duplicate: bool = False,
    drop: Callable[[Message], bool] | None = None,
) -> Outcome[R]:
    """Run parties to completion; raises `Stalled` if the run stops with nobody aborted."""
    by_index: dict[int, Party[R]] = {p.me: p for p in parties}
    mutators = mutators or {}
    outcome: Outcome[R] = Outcome()
    queue: list[Message] = []
    shuffle = _Shuffle(seed)

    def emit(sender: int, messages: list[Message]) -> None:
        for message in messages:
            mutate = mutators.get(sender)
            produced = mutate(message) if mutate else message
            batch = (
                [] if produced is None else produced if isinstance(produced, list) else [produced]
            )
            outcome.sent.setdefault(sender, []).extend(batch)
            queue.extend(batch)
            if duplicate:
                queue.extend(batch)

    for party in parties:
        try:
            emit(party.me, party.start())
        except ProtocolAbort as abort:
            outcome.aborts[party.me] = abort
    while queue:
        message = queue.pop(shuffle.below(len(queue)))
        if drop is not None and drop(message):
            continue
        targets = (
            [j for j in by_index if j != message.sender]
            if message.recipient is None
            else [message.recipient]
        )
        for j in targets:
            target = by_index.get(j)
            if target is None or target.done or j in outcome.aborts:
                continue
            try:
                emit(j, target.receive(message))
            except MessageRefused as refused:
                outcome.refused.append((j, refused))
            except ProtocolAbort as abort:
                outcome.aborts[j] = abort
                emit(j, list(abort.outgoing))
            if target.done:
                outcome.results[j] = target.result
    outcome.waiting = [p.me for p in parties if not p.done and p.me not in outcome.aborts]
    if outcome.waiting and not outcome.aborts:
        raise Stalled(outcome.waiting)
    return outcome
