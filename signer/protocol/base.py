"""The round engine shared by every protocol: sessions, messages, echo broadcast, blame.

A protocol is a sequence of rounds.  In round r every party sends at most one broadcast payload
and at most one point-to-point payload to each other party; once a party holds every message of
round r it computes round r + 1.  A round marked `echo` is followed by an echo round in which
every party broadcasts a digest of all broadcast payloads it received (its own included); a
mismatch means somebody equivocated and the session aborts before anything of the next round is
sent (CGGMP21 §3 "reliable broadcast"; attacks.md A12).  The payloads of the echoed round are
still verified first, so that a cheater cannot hide a bad proof behind a false echo digest
(`_advance`, "the echo rule").

A party fails for good on the first error inside its round handling, whatever its type (as
h11's connection state machine does): a `ProtocolAbort` is kept, any other exception becomes one
with `Check.INTERNAL` and no culprit, and every later `start`/`receive` raises the kept abort, so
no party is ever left half-advanced.  Only a refusal that changes nothing — a message of another
session (`CryptoMisuse`) or from outside the party set (`MessageRefused`) — leaves it running.

Every rejection is a `ProtocolAbort` naming the culprits and the failed check.  The sender of a
message is the authenticated transport identity (the node layer signs messages); a payload never
names its own sender.  Echo mismatches cannot be attributed without signed payloads, so they
abort with no culprit rather than risk blaming an honest party (attacks.md A20).
"""

from __future__ import annotations

import hashlib
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from signer.curve import Point, Q
from signer.encoding import Encodable, decode, encode
from signer.errors import (
    Check,
    CryptoMisuse,
    EncodingError,
    InvalidParameter,
    ProofRejected,
    TesseraError,
)
from signer.params import MAX_PARTY_INDEX

R = TypeVar("R")

#: Bound on a protocol payload (the largest, aux-info round 3, is ≈ 220 KB per recipient).
MAX_PAYLOAD_BYTES = 1 << 20


class ProtocolAbort(TesseraError):
    """A session ended without output.  `culprits` are the parties proven to have cheated
    (empty when the failure cannot be attributed), `code` the failed check."""

    def __init__(
        self,
        protocol: str,
        round_number: int,
        code: Check,
        culprits: frozenset[int],
        detail: str,
    ) -> None:
        self.protocol = protocol
        self.round = round_number
        self.code = code
        self.culprits = culprits
        self.detail = detail
        self.outgoing: tuple[Message, ...] = ()  # to send despite the abort
        who = f"culprits {sorted(culprits)}" if culprits else "culprit unknown"
        super().__init__(
            f"{protocol} aborted in round {round_number}: {code.value} ({who}): {detail}"
        )


class MessageRefused(TesseraError):
    """A message this party does not take, without changing its state: the sender is not
    another party of the session (on a node: a pinned node that is not in this session, which
    must not be able to abort it with one signed envelope; attacks.md A19 T19f)."""

    def __init__(self, sender: int, check: Check, detail: str) -> None:
        self.sender = sender
        self.check = check
        self.detail = detail
        super().__init__(f"message from {sender} refused: {check.value}: {detail}")


@dataclass(frozen=True)
class Message:
    """One protocol message as the transport carries it.  A broadcast message has `broadcast`
    set and `recipient` None (deliver to all) or one party (the transport's per-recipient copy —
    which is how a cheating sender can equivocate, and why broadcasts are echoed)."""

    protocol: str
    session: bytes
    round: int
    sender: int
    recipient: int | None
    payload: bytes
    broadcast: bool


@dataclass(frozen=True)
class SessionConfig:
    """What every party of a session agrees on before round 1.

    `request` is the caller's unique id of this run (e.g. a UUID); the session id proper is
    derived in round 1 from it and a fresh nonce of every party (`Party.session_id`)."""

    protocol: str
    parties: tuple[int, ...]
    me: int
    threshold: int
    key_id: bytes
    request: bytes

    def __post_init__(self) -> None:
        parties = self.parties
        if any(isinstance(i, bool) or not 1 <= i <= MAX_PARTY_INDEX for i in parties):
            raise InvalidParameter(
                "party set", Check.PARTY_INDEX, f"indices must be 1..{MAX_PARTY_INDEX}"
            )
        if len(set(parties)) != len(parties) or tuple(sorted(parties)) != parties:
            raise InvalidParameter(
                "party set", Check.PARTY_INDEX, "indices must be distinct and sorted"
            )
        if len(parties) < 2:
            raise InvalidParameter("party set", Check.LENGTH, "at least two parties")
        if self.me not in parties:
            raise InvalidParameter("party set", Check.PARTY_INDEX, f"{self.me} is not a party")
        if not 1 <= self.threshold <= len(parties):  # protocols narrow this further
            raise InvalidParameter(
                "threshold", Check.RANGE, f"t = {self.threshold} for n = {len(parties)}"
            )
        if not 16 <= len(self.request) <= 64:
            raise InvalidParameter("request id", Check.SESSION_ID, "must be 16..64 bytes")

    @property
    def others(self) -> tuple[int, ...]:
        return tuple(j for j in self.parties if j != self.me)

    def instance(self) -> bytes:
        """Identifies this run before the joint session id exists (the transport's session)."""
        return hashlib.sha256(
            encode(
                [
                    "tessera/session/v1",
                    self.protocol,
                    self.key_id,
                    list(self.parties),
                    self.threshold,
                    self.request,
                ]
            )
        ).digest()


@dataclass(frozen=True)
class RoundSpec:
    broadcast: bool
    p2p: bool
    echo: bool = False


@dataclass
class Outgoing:
    broadcast: Encodable | None = None
    p2p: dict[int, Encodable] = field(default_factory=dict)


@dataclass
class Inbox:
    """What arrived in one round: decoded broadcast and point-to-point payloads per sender."""

    broadcast: dict[int, Encodable] = field(default_factory=dict)
    p2p: dict[int, Encodable] = field(default_factory=dict)


class Party(ABC, Generic[R]):
    """A party of one protocol run.  Subclasses define `PROTOCOL`, `ROUNDS`, `_round(r, inbox)`
    producing round r (r ≥ 1, inbox = round r−1) and `_finish(inbox)` producing the output."""

    PROTOCOL: ClassVar[str]
    ROUNDS: ClassVar[tuple[RoundSpec, ...]]

    def __init__(self, config: SessionConfig) -> None:
        if config.protocol != self.PROTOCOL:
            raise CryptoMisuse(f"config is for {config.protocol}, not {self.PROTOCOL}")
        self.config = config
        self.me = config.me
        self._instance = config.instance()
        self._schedule = self._build_schedule()
        self._current = 0  # index into the schedule of the round being collected
        self._raw: dict[int, dict[tuple[int, bool], bytes]] = {}
        self._own_broadcast: dict[int, bytes] = {}
        self._started = False
        self._aborted: ProtocolAbort | None = None
        self._result: R | None = None
        self._nonces = {self.me: secrets.token_bytes(32)}
        self._commitments: dict[int, bytes] = {}  # commit-then-open protocols
        self._session_id: bytes | None = None
        self._pending: R | None = None  # an output computed, awaiting its echo check

    # --- public interface --------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> R:
        if self._result is None:
            raise CryptoMisuse(f"{self.PROTOCOL} has no output yet")
        return self._result

    @property
    def session_id(self) -> bytes:
        """H(instance, every party's round-1 nonce): unique even if the caller reuses ids."""
        if self._session_id is None:
            raise CryptoMisuse("session id is known only after round 1")
        return self._session_id

    @property
    def aborted(self) -> ProtocolAbort | None:
        """The abort this party failed with (terminal), or None."""
        return self._aborted

    def start(self) -> list[Message]:
        if self._aborted is not None:
            raise self._aborted
        if self._started:
            raise CryptoMisuse("start() called twice")
        self._started = True
        try:
            return self._run_round(1, Inbox())
        except ProtocolAbort as abort:
            self._fail(abort, [])
            raise
        except Exception as exc:
            raise self._fail(exc, []) from exc

    def receive(self, message: Message) -> list[Message]:
        """Consume one message; returns the messages to send (possibly none).

        Raises the party's terminal `ProtocolAbort` once it failed; `MessageRefused` or
        `CryptoMisuse` for a message it does not take, which changes nothing."""
        if self._aborted is not None:
            raise self._aborted
        if self._result is not None or not self._started:
            raise CryptoMisuse("receive() outside a running session")
        self._admit(message)
        out: list[Message] = []
        try:
            self._store(message)
            while self._result is None and self._round_complete():
                out.extend(self._advance())
            return out
        except ProtocolAbort as abort:
            self._fail(abort, out)
            raise
        except Exception as exc:
            raise self._fail(exc, out) from exc

    def _fail(self, exc: Exception, out: list[Message]) -> ProtocolAbort:
        """Make the party terminal: keep `exc` as its abort, or wrap any other exception —
        a bug, RecursionError, MemoryError, or a project error raised outside `blame` — in a
        `Check.INTERNAL` abort chained from it.  That names nobody: an error of our own code is
        no evidence against a peer (attacks.md A20), and a node freezes the party set for it
        like for any unattributed failure."""
        if isinstance(exc, ProtocolAbort):
            abort = exc
        else:
            detail = f"{type(exc).__name__} in round handling: {exc}"
            abort = self._abort(max(self._current, 1), Check.INTERNAL, [], detail[:500])
            abort.__cause__ = exc
        # Messages completed before the failure (e.g. our echo) still go out, so that the
        # other honest parties reach the same verdict instead of waiting for us.
        abort.outgoing = tuple(out)
        self._aborted = abort
        return abort

    # --- schedule ----------------------------------------------------------------------------
    def _build_schedule(self) -> list[tuple[int, bool]]:
        """[(protocol round, is_echo)] in wire order; wire round numbers are positions + 1."""
        schedule: list[tuple[int, bool]] = []
        for number, spec in enumerate(self.ROUNDS, start=1):
            schedule.append((number, False))
            if spec.echo:
                schedule.append((number, True))
        return schedule

    def _wire_round(self, number: int, echo: bool) -> int:
        return self._schedule.index((number, echo)) + 1

    def _abort(
        self, round_number: int, code: Check, culprits: Sequence[int], detail: str
    ) -> ProtocolAbort:
        return ProtocolAbort(self.PROTOCOL, round_number, code, frozenset(culprits), detail)

    # --- collection --------------------------------------------------------------------------
    def _admit(self, message: Message) -> None:
        """Refusals that leave the party as it was: nothing here reads or changes its state
        beyond the config, so a message nobody in the session sent cannot end the session."""
        if message.protocol != self.PROTOCOL or message.session != self._instance:
            raise CryptoMisuse("message for another session delivered to this party")
        if message.sender not in self.config.others:
            raise MessageRefused(
                message.sender, Check.PARTY_INDEX, f"not another party of {self.config.parties}"
            )
        if message.recipient not in (None, self.me) or (
            not message.broadcast and message.recipient is None
        ):
            raise CryptoMisuse("message for another party delivered here")

    def _store(self, message: Message) -> None:
        wire_round = message.round
        if not 1 <= wire_round <= len(self._schedule):
            raise self._abort(wire_round, Check.DECODE, [message.sender], "no such round")
        number, echo = self._schedule[wire_round - 1]
        spec = self.ROUNDS[number - 1]
        is_broadcast = message.broadcast
        if (is_broadcast and not (spec.broadcast or echo)) or (
            not is_broadcast and (echo or not spec.p2p)
        ):
            raise self._abort(wire_round, Check.DECODE, [message.sender], "unexpected message kind")
        if len(message.payload) > MAX_PAYLOAD_BYTES:
            raise self._abort(wire_round, Check.LENGTH, [message.sender], "payload too large")
        slot = self._raw.setdefault(wire_round, {})
        key = (message.sender, is_broadcast)
        if key in slot:
            if slot[key] != message.payload:  # two authenticated, different payloads
                raise self._abort(
                    wire_round, Check.EQUIVOCATION, [message.sender], "two different payloads"
                )
            return  # an identical duplicate is dropped
        if wire_round <= self._current:
            raise self._abort(wire_round, Check.DECODE, [message.sender], "round already closed")
        slot[key] = message.payload

    def _round_complete(self) -> bool:
        wire_round = self._current + 1
        if wire_round > len(self._schedule):
            return False
        number, echo = self._schedule[wire_round - 1]
        spec = self.ROUNDS[number - 1]
        slot = self._raw.get(wire_round, {})
        for j in self.config.others:
            if (spec.broadcast or echo) and (j, True) not in slot:
                return False
            if spec.p2p and not echo and (j, False) not in slot:
                return False
        return True

    def _decoded(self, wire_round: int) -> Inbox:
        inbox = Inbox()
        contexts: dict[int, bytes] = {}
        for (sender, is_broadcast), payload in self._raw.get(wire_round, {}).items():
            with self.blame(sender, wire_round):
                value = decode(payload, f"round {wire_round} from party {sender}")
                if wire_round == 1 and is_broadcast:  # [nonce, context, protocol payload]
                    nonce, context, value = as_list(value, 3, "round 1")
                    self._nonces[sender] = expect_bytes(nonce, 32, "session nonce")
                    if not isinstance(context, bytes) or len(context) > 64:
                        raise EncodingError("session context", Check.LENGTH, "≤ 64 bytes")
                    contexts[sender] = context
            (inbox.broadcast if is_broadcast else inbox.p2p)[sender] = value
        mine = self.session_context()
        differ = sorted(j for j, context in contexts.items() if context != mine)
        if differ:
            # Either side may hold the stale input, so nobody is blamed (attacks.md A20).
            raise self._abort(
                wire_round,
                Check.MISMATCH,
                [],
                f"parties {differ} run on another {self.SESSION_CONTEXT} than mine",
            )
        return inbox

    # --- progress ----------------------------------------------------------------------------
    def _advance(self) -> list[Message]:
        self._current += 1
        wire_round = self._current
        number, echo = self._schedule[wire_round - 1]
        if not echo:
            inbox = self._decoded(wire_round)
            if self.ROUNDS[number - 1].echo:
                return self._send_echo(number)
            return self._proceed(number, inbox)
        # The echo rule (attacks.md A12, A20).  Round `number`'s payloads are verified *before*
        # the echo is compared, and a verdict naming a culprit wins over an echo mismatch:
        # otherwise a cheater sends a bad proof and a false echo digest and turns its own
        # RANGE/EQUATION [j] into an EQUIVOCATION that names nobody.  Sound because every check
        # that names party j in the step after an echoed round (the next `_round` or `_finish`)
        # depends only on what j itself sent us, authenticated, and on state all honest parties
        # already agree on — never on a third party's round-`number` broadcast, which the
        # failed echo says may differ between views:
        # - keygen: commitment format (r1); Schnorr z_j (r3) against X_j, A_j and rid, all
        #   fixed by the openings that the echoed round-1 commitments bind;
        # - aux-info: commitment format (r1); Πmod, Πprm, Πfac of j (r3) over j's opened
        #   (N_j, s_j, t_j) and ρ = ⊕ ρ_k, bound the same way, Πfac under my own parameters;
        # - presign / interactive signing: K_j, G_j and Πenc of j (r1), bound to j's own nonce;
        #   Δ_j and Πlog* of j (r3) against K_j (echoed) and Γ = Σ Γ_k, each Γ_k fixed by Πlog*
        #   against the echoed G_k;
        # - presign identification: forwards of j (r1) checked against the failed presign's
        #   agreed public data;
        # - re-share / refresh: commitment format (r1); j's acknowledgement (r3) against X′_j
        #   and the new version, both fixed by the committed openings.
        # Aggregate checks (Σ δ_j, Σ S_j, Σ F_j[0] = Y, the identity checks, duplicate moduli)
        # and every other failure name nobody; for them the echo mismatch takes precedence.
        # Whatever was computed is discarded unless the echo holds: nothing is output or sent
        # from a split view.
        inbox = self._decoded(self._wire_round(number, False))
        try:
            outgoing = self._proceed(number, inbox, commit=False)
        except ProtocolAbort as abort:
            if not abort.culprits:
                self._check_echo(number, wire_round)
            raise
        except Exception:
            self._check_echo(number, wire_round)
            raise
        self._check_echo(number, wire_round)
        if self._pending is not None:
            self._result, self._pending = self._pending, None
            self._raw.clear()
        return outgoing

    def _proceed(self, number: int, inbox: Inbox, *, commit: bool = True) -> list[Message]:
        """Compute what follows round `number`: round number + 1, or the output.  With
        `commit` False the output is kept aside (`_pending`) until the echo check passed."""
        if number == len(self.ROUNDS):
            result = self._finish(inbox)
            if commit:
                self._result = result
                self._raw.clear()
            else:
                self._pending = result
            return []
        return self._run_round(number + 1, inbox)

    def _run_round(self, number: int, inbox: Inbox) -> list[Message]:
        if number == 2:
            ordered: list[Encodable] = [[j, self._nonces[j]] for j in self.config.parties]
            digest = hashlib.sha256(encode(["tessera/sid/v1", self._instance, ordered]))
            self._session_id = digest.digest()
        out = self._round(number, inbox)
        wire_round = self._wire_round(number, False)
        spec = self.ROUNDS[number - 1]
        messages: list[Message] = []
        if spec.broadcast:
            if out.broadcast is None:
                raise CryptoMisuse(f"round {number} must broadcast")
            body = (
                [self._nonces[self.me], self.session_context(), out.broadcast]
                if number == 1
                else out.broadcast
            )
            payload = encode(body)
            self._own_broadcast[number] = payload
            messages.append(self._message(wire_round, None, payload))
        if spec.p2p:
            if set(out.p2p) != set(self.config.others):
                raise CryptoMisuse(f"round {number} must send to every other party")
            messages.extend(
                self._message(wire_round, j, encode(v)) for j, v in sorted(out.p2p.items())
            )
        return messages

    def round1_binding(self, party: int) -> bytes:
        """For proofs sent in round 1, before the joint session id exists: the run's instance
        and the prover's own fresh nonce (fresh even if a caller reused its request id)."""
        return hashlib.sha256(
            encode(["tessera/round1/v1", self._instance, self._nonces[party]])
        ).digest()

    def _message(self, wire_round: int, recipient: int | None, payload: bytes) -> Message:
        return Message(
            self.PROTOCOL,
            self._instance,
            wire_round,
            self.me,
            recipient,
            payload,
            recipient is None,
        )

    # --- echo broadcast ----------------------------------------------------------------------
    def _echo_digest(self, number: int) -> bytes:
        wire_round = self._wire_round(number, False)
        slot = self._raw.get(wire_round, {})
        views: list[Encodable] = [
            [j, self._own_broadcast[number] if j == self.me else slot[(j, True)]]
            for j in self.config.parties
        ]
        return hashlib.sha256(encode(["tessera/echo/v1", self._instance, number, views])).digest()

    def _send_echo(self, number: int) -> list[Message]:
        digest = self._echo_digest(number)
        return [self._message(self._wire_round(number, True), None, encode(digest))]

    def _check_echo(self, number: int, wire_round: int) -> None:
        mine = self._echo_digest(number)
        disagree = []
        for (sender, _), payload in sorted(self._raw.get(wire_round, {}).items()):
            with self.blame(sender, wire_round):
                digest = expect_bytes(decode(payload, "echo"), 32, "echo digest")
            if digest != mine:
                disagree.append(sender)
        if disagree:
            raise self._abort(
                wire_round,
                Check.EQUIVOCATION,
                [],
                f"round {number} broadcast views differ (echo from {disagree} disagrees with mine)",
            )

    # --- commit / open (keygen, aux-info) -----------------------------------------------------
    def _commit(self, tag: str, opening: Sequence[Encodable]) -> Outgoing:
        """Round 1 of a commit-then-open protocol: broadcast V_i = H(tag, run, i, opening)."""
        own = commitment(tag, self._instance, self.me, opening)
        self._commitments[self.me] = own
        return Outgoing(broadcast=[own])

    def _collect_commitments(self, inbox: Inbox) -> None:
        for j, value in inbox.broadcast.items():
            with self.blame(j, 1):
                self._commitments[j] = expect_bytes(as_list(value, 1, "commitment")[0], 32, "V")

    def _check_opening(
        self, tag: str, party: int, opening: Sequence[Encodable], round_number: int
    ) -> None:
        if commitment(tag, self._instance, party, opening) != self._commitments[party]:
            raise self._abort(round_number, Check.COMMITMENT, [party], "opening does not match V_j")

    # --- blame -------------------------------------------------------------------------------
    @contextmanager
    def blame(self, culprit: int, round_number: int) -> Iterator[None]:
        """Turn any validation error raised inside into a ProtocolAbort naming `culprit`."""
        try:
            yield
        except ProofRejected as exc:
            raise self._abort(round_number, exc.check, [culprit], str(exc)) from exc
        except (EncodingError, InvalidParameter) as exc:
            raise self._abort(round_number, exc.check, [culprit], str(exc)) from exc

    # --- protocol-specific -------------------------------------------------------------------
    #: What `session_context` digests, for error messages.
    SESSION_CONTEXT: ClassVar[str] = "context"

    def session_context(self) -> bytes:
        """Digest of inputs every party must share beyond the config — e.g. the key version a
        presign runs on — sent with the round-1 nonce and compared before any round-1 payload
        is used (Check.MISMATCH).  Empty for protocols without such inputs."""
        return b""

    @abstractmethod
    def _round(self, number: int, inbox: Inbox) -> Outgoing: ...

    @abstractmethod
    def _finish(self, inbox: Inbox) -> R: ...


# --- payload parsing helpers (raise EncodingError; callers wrap them in `blame`) --------------


def as_list(value: Encodable, length: int | None, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise EncodingError(where, Check.DECODE, "expected a list")
    if length is not None and len(value) != length:
        raise EncodingError(where, Check.LENGTH, f"{len(value)} items, expected {length}")
    return value


def expect_bytes(value: Encodable, length: int, where: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise EncodingError(where, Check.LENGTH, f"expected {length} bytes")
    return value


def expect_blob(value: Encodable, where: str) -> bytes:
    """A nested encoded object (e.g. a proof's wire form), decoded by its own strict parser."""
    if not isinstance(value, bytes):
        raise EncodingError(where, Check.DECODE, "expected bytes")
    return value


def expect_point(value: Encodable, where: str) -> Point:
    if not isinstance(value, Point):
        raise EncodingError(where, Check.BAD_POINT, "expected a point")
    return value


def expect_scalar(value: Encodable, where: str, nonzero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < Q:
        raise EncodingError(where, Check.RANGE, "scalar not in [0, q)")
    if nonzero and value == 0:
        raise EncodingError(where, Check.ZERO_SCALAR, "zero scalar")
    return value


def expect_nat(value: Encodable, max_bits: int, where: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 0
        or value.bit_length() > max_bits
    ):
        raise EncodingError(where, Check.RANGE, f"expected a natural number of ≤ {max_bits} bits")
    return value


def commitment(tag: str, instance: bytes, party: int, values: Sequence[Encodable]) -> bytes:
    """Hash commitment bound to the run and the opener's index (attacks.md A13 T13d)."""
    return hashlib.sha256(encode([tag, instance, party, list(values)])).digest()


def xor_bytes(chunks: Sequence[bytes]) -> bytes:
    out = bytes(len(chunks[0]))
    for chunk in chunks:
        out = bytes(a ^ b for a, b in zip(out, chunk, strict=True))
    return out
