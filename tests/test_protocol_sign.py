"""Presign + sign: the (t, n) matrix with and without HD derivation, every signature checked by
three independent verifiers, presignature single use, re-randomisation, verifiable partials, full
interactive signing and the presign-time attacks (attacks.md A01, A03, A10, A11, A13, A14)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from eth_keys import keys as eth_keys
from harness import assert_no_honest_blamed, configs
from protocol_fixtures import aux_info, keys

from signer.curve import Point, Q
from signer.errors import Check, CryptoMisuse, InvalidParameter
from signer.protocol.hd import derive
from signer.protocol.keygen import KeyShare
from signer.protocol.presign import Presignature, PresignatureReused, PresignParty
from signer.protocol.sign import (
    HashScheme,
    PartialSignatureInvalid,
    Signature,
    SignParty,
    combine,
    issue_partial,
    message_digest,
)
from signer.protocol.simulate import Outcome, run

PRESIGN_LAST = 5  # wire rounds: 1, echo 2, 3, 4, echo 5


def presign(
    t: int, n: int, signers: tuple[int, ...], path: tuple[int, ...] = (), **kwargs: Any
) -> Outcome[Presignature]:
    key, aux = keys(t, n), aux_info(n)
    cfgs = configs("presign/v1", signers, t, b"wallet")
    return run([PresignParty(c, key[c.me], aux[c.me], path) for c in cfgs], **kwargs)


def sign_with(
    presignatures: dict[int, Presignature], message: bytes, scheme: HashScheme, key: KeyShare
) -> Signature:
    partials = {i: issue_partial(p, message, scheme) for i, p in presignatures.items()}
    any_public = next(iter(presignatures.values())).public
    return combine(any_public, message, scheme, partials, key.public_data())


def check_independently(signature: Signature, message: bytes, scheme: HashScheme) -> None:
    """coincurve (libsecp256k1), cryptography (OpenSSL) and eth-keys public-key recovery."""
    digest = message_digest(message, scheme)
    assert signature.digest == digest
    public = signature.public_key.to_public_key()
    assert public.verify(signature.der(), digest, hasher=None)
    openssl_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), public.format())
    openssl_key.verify(signature.der(), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert signature.s <= Q // 2
    eth_signature = eth_keys.Signature(vrs=(signature.recovery_id, signature.r, signature.s))
    recovered = eth_signature.recover_public_key_from_msg_hash(digest)
    expected = eth_keys.PublicKey(public.format(compressed=False)[1:])
    assert recovered.to_checksum_address() == expected.to_checksum_address()


MATRIX = [(2, 2), (2, 3), (3, 3), (3, 5)]


@pytest.mark.parametrize("t, n", MATRIX)
@pytest.mark.parametrize("path", [(), (0, 17)])
def test_matrix_presign_and_sign(t: int, n: int, path: tuple[int, ...]) -> None:
    signers = tuple(range(n - t + 1, n + 1))  # the last t parties: not always party 1
    outcome = presign(t, n, signers, path, seed=t + n)
    assert not outcome.aborts and sorted(outcome.results) == list(signers)
    public = outcome.results[signers[0]].public
    assert all(p.public == public for p in outcome.results.values())
    key = keys(t, n)[signers[0]]
    assert public.derivation == derive(key.public_key, key.chain_code, path)
    message = b"\x02\xf8\x70 an unsigned EIP-1559 transaction " + bytes(path)
    signature = sign_with(outcome.results, message, HashScheme.KECCAK256, key)
    assert signature.public_key == public.derivation.public_key
    check_independently(signature, message, HashScheme.KECCAK256)


@pytest.mark.parametrize("signers", [(1, 2, 3), (1, 3, 5), (2, 4, 5)])
def test_other_t_subsets_of_n_sign(signers: tuple[int, ...]) -> None:
    """A representative sample of the ten 3-subsets of 5 (the matrix covers (3, 4, 5))."""
    outcome = presign(3, 5, signers)
    message = b"withdrawal"
    check_independently(
        sign_with(outcome.results, message, HashScheme.SHA256D, keys(3, 5)[1]),
        message,
        HashScheme.SHA256D,
    )


@pytest.mark.parametrize("signers", [(1,), (1, 2), (1, 2, 3, 4), (1, 1, 2)])
def test_T15c_wrong_signer_set_rejected_before_round_1(signers: tuple[int, ...]) -> None:
    key, aux = keys(3, 5), aux_info(5)
    with pytest.raises((InvalidParameter, CryptoMisuse)):
        cfgs = configs("presign/v1", signers, 3, b"wallet")
        PresignParty(cfgs[0], key[cfgs[0].me], aux[cfgs[0].me])


@pytest.fixture(scope="module")
def fresh() -> dict[int, Presignature]:
    return presign(2, 3, (1, 2), seed=11).results


def test_T11a_presignature_is_single_use(fresh: dict[int, Presignature]) -> None:
    presig = fresh[1]
    first = issue_partial(presig, b"m1", HashScheme.KECCAK256)
    assert 0 <= first < Q and presig.used
    with pytest.raises(PresignatureReused):
        issue_partial(presig, b"m2", HashScheme.KECCAK256)
    with pytest.raises(PresignatureReused):
        issue_partial(presig, b"m1", HashScheme.KECCAK256)


def test_T11e_presignature_bound_to_its_signer_set() -> None:
    outcome = presign(2, 3, (1, 2))
    public = outcome.results[1].public
    partials = {1: issue_partial(outcome.results[1], b"m", HashScheme.KECCAK256), 3: 5}
    with pytest.raises(CryptoMisuse):
        combine(public, b"m", HashScheme.KECCAK256, partials, keys(2, 3)[1].public_data())


def test_T03a_bad_partial_is_named() -> None:
    outcome = presign(3, 5, (1, 2, 3))
    message = b"pay 1 ETH"
    partials = {
        i: issue_partial(p, message, HashScheme.KECCAK256) for i, p in outcome.results.items()
    }
    partials[3] = (partials[3] + 1) % Q
    with pytest.raises(PartialSignatureInvalid) as err:
        combine(
            outcome.results[1].public,
            message,
            HashScheme.KECCAK256,
            partials,
            keys(3, 5)[1].public_data(),
        )
    assert err.value.culprits == frozenset({3})


def test_T10a_rerandomised_nonce_depends_on_the_message() -> None:
    outcome = presign(2, 3, (2, 3))
    presig_R = outcome.results[2].public.R
    signature = sign_with(outcome.results, b"message A", HashScheme.KECCAK256, keys(2, 3)[2])
    assert signature.r != presig_R.x_coordinate() % Q  # R' = h·R, never R itself
    other = presign(2, 3, (2, 3))
    r_a = sign_with(dict(other.results), b"message A", HashScheme.KECCAK256, keys(2, 3)[2]).r
    assert r_a != signature.r  # fresh presignature, fresh R


def test_T10b_no_raw_digest_api() -> None:
    """Every online entry point takes message bytes and hashes them itself: a 32-byte 'digest'
    handed in is treated as a message and hashed again."""
    outcome = presign(2, 3, (1, 3))
    digest = bytes(range(32))
    signature = sign_with(outcome.results, digest, HashScheme.KECCAK256, keys(2, 3)[1])
    assert signature.digest != digest and signature.digest == message_digest(
        digest, HashScheme.KECCAK256
    )
    with pytest.raises(CryptoMisuse):
        message_digest(b"", HashScheme.KECCAK256)
    import inspect

    for fn in (issue_partial, combine):
        assert "digest" not in inspect.signature(fn).parameters


def test_interactive_signing() -> None:
    key, aux = keys(2, 3), aux_info(3)
    cfgs = configs("interactive_sign/v1", (1, 3), 2, b"wallet")
    message = b"cold wallet sweep"
    parties = [SignParty(c, key[c.me], aux[c.me], message, HashScheme.SHA256D, (5,)) for c in cfgs]
    outcome = run(parties)
    assert not outcome.aborts
    signatures = list(outcome.results.values())
    assert signatures[0] == signatures[1]
    check_independently(signatures[0], message, HashScheme.SHA256D)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"message": b"another transaction"}, "message"),
        ({"path": (6,)}, "derivation path"),
    ],
)
def test_A20_different_inputs_abort_in_round_one_blaming_nobody(
    change: dict[str, Any], what: str
) -> None:
    """A caller that gives party 3 another message or path than party 1 (a compromised
    coordinator) must not get 3 blamed later for a partial or an output check that could not
    match: the inputs are part of the round-1 session context, so both abort with MISMATCH
    before any secret is used, naming nobody."""
    key, aux = keys(2, 3), aux_info(3)
    cfgs = configs("interactive_sign/v1", (1, 3), 2, b"wallet")
    inputs: dict[str, Any] = {"message": b"cold wallet sweep", "path": (5,)}
    parties = [
        SignParty(
            c,
            key[c.me],
            aux[c.me],
            (inputs | change if c.me == 3 else inputs)["message"],
            HashScheme.SHA256D,
            (inputs | change if c.me == 3 else inputs)["path"],
        )
        for c in cfgs
    ]
    outcome = run(parties)
    assert not outcome.results
    for i in (1, 3):
        abort = outcome.aborts[i]
        assert abort.code == Check.MISMATCH and abort.culprits == frozenset(), abort
        assert abort.round == 1 and what in SignParty.SESSION_CONTEXT


def test_A20_presign_with_different_paths_aborts_in_round_one() -> None:
    key, aux = keys(2, 3), aux_info(3)
    cfgs = configs("presign/v1", (1, 3), 2, b"wallet")
    parties = [PresignParty(c, key[c.me], aux[c.me], (0, c.me)) for c in cfgs]
    outcome = run(parties)
    assert not outcome.results
    assert {i: (a.code, a.culprits) for i, a in outcome.aborts.items()} == {
        1: (Check.MISMATCH, frozenset()),
        3: (Check.MISMATCH, frozenset()),
    }


class WrongSigma(SignParty):
    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 4:
            out.broadcast = [(out.broadcast[0] + 1) % Q]
        return out


def test_T03a_interactive_bad_partial_blamed() -> None:
    key, aux = keys(2, 3), aux_info(3)
    cfgs = configs("interactive_sign/v1", (1, 3), 2, b"wallet")
    parties = [
        (WrongSigma if c.me == 3 else SignParty)(c, key[c.me], aux[c.me], b"m", HashScheme.SHA256D)
        for c in cfgs
    ]
    outcome = run(parties)
    assert outcome.aborts[1].culprits == frozenset({3}) and outcome.aborts[1].code == Check.EQUATION
    assert 1 not in outcome.results


# --- malicious signer in presign --------------------------------------------------------------


class LargeK(PresignParty):
    """T01a: K encrypts a huge k (N/2^16 + k) but the Πenc is the proof of the small k."""

    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 1:
            own = self.aux.own.paillier
            huge, _ = own.encrypt(own.n // (1 << 16) + self._k)
            out.broadcast = [huge, out.broadcast[1]]
        return out


class TamperedAffG(PresignParty):
    """Party 3's MtA response D is off by one plaintext unit (its Πaff-g then fails)."""

    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 2:
            for j, fields in out.p2p.items():
                key_j = self._key_of(j)
                fields[1] = key_j.add(fields[1], key_j.encrypt(1)[0])
        return out


class WrongDelta(PresignParty):
    """T03b: δ_3 + 1 (consistently to everyone)."""

    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 3:
            out.broadcast[0] = (out.broadcast[0] + 1) % Q
        return out


def _malicious_presign(cls: type[PresignParty]) -> Outcome[Presignature]:
    key, aux = keys(2, 3), aux_info(3)
    cfgs = configs("presign/v1", (1, 3), 2, b"wallet")
    return run([(cls if c.me == 3 else PresignParty)(c, key[c.me], aux[c.me]) for c in cfgs])


def test_T01a_large_k_with_the_proof_of_a_small_one() -> None:
    outcome = _malicious_presign(LargeK)
    abort = outcome.aborts[1]
    assert abort.culprits == frozenset({3}) and abort.code == Check.EQUATION
    assert all(m.round <= 2 for m in outcome.sent[1]), "honest party answered the MtA"


def test_tampered_mta_response_blamed() -> None:
    outcome = _malicious_presign(TamperedAffG)
    abort = outcome.aborts[1]
    assert abort.culprits == frozenset({3}) and abort.code == Check.EQUATION
    assert "aff_g" in str(abort)
    assert all(m.round <= 3 for m in outcome.sent[1]), "honest party went on to round 3"


def test_T03b_wrong_delta_is_detected_without_blaming_the_honest() -> None:
    outcome = _malicious_presign(WrongDelta)
    assert 1 not in outcome.results
    assert outcome.aborts[1].code == Check.EQUATION
    assert_no_honest_blamed(outcome, [1])


def test_T14b_gamma_identity_cannot_be_sent() -> None:
    """Γ_j travels as a SEC1 point: the identity has no encoding, so a party cannot send it."""
    with pytest.raises(CryptoMisuse):
        Point.identity().to_bytes()


def test_T13a_replayed_round_one_is_caught() -> None:
    """A party replaying its round-1 messages (K, G and the Πenc proofs) from an earlier run is
    caught before any MtA response is sent, and no honest party is blamed."""
    key, aux = keys(2, 3), aux_info(3)
    first = [
        PresignParty(c, key[c.me], aux[c.me]) for c in configs("presign/v1", (1, 2), 2, b"wallet")
    ]
    recorded = run(first).sent[2]
    old_round1 = [m for m in recorded if m.round == 1]

    def replay(message: Any) -> Any:
        if message.round != 1:
            return message
        old = next(m for m in old_round1 if m.recipient == message.recipient)
        return dataclasses.replace(message, payload=old.payload)

    second = [
        PresignParty(c, key[c.me], aux[c.me]) for c in configs("presign/v1", (1, 2), 2, b"wallet")
    ]
    outcome = run(second, mutators={2: replay})
    assert 1 in outcome.aborts and 1 not in outcome.results
    assert outcome.aborts[1].culprits <= frozenset({2})
    assert all(m.round <= 2 for m in outcome.sent[1])


def test_T13a_replayed_proof_for_a_fresh_k_is_rejected() -> None:
    """The Πenc of an earlier run sent with this run's K: rejected, the replayer blamed."""
    key, aux = keys(2, 3), aux_info(3)
    first = [
        PresignParty(c, key[c.me], aux[c.me]) for c in configs("presign/v1", (1, 2), 2, b"wallet")
    ]
    old_proofs = {
        m.recipient: m.payload for m in run(first).sent[2] if m.round == 1 and not m.broadcast
    }

    def replay(message: Any) -> Any:
        if message.round == 1 and not message.broadcast:
            return dataclasses.replace(message, payload=old_proofs[message.recipient])
        return message

    second = [
        PresignParty(c, key[c.me], aux[c.me]) for c in configs("presign/v1", (1, 2), 2, b"wallet")
    ]
    outcome = run(second, mutators={2: replay})
    assert outcome.aborts[1].culprits == frozenset({2})
    assert outcome.aborts[1].code == Check.EQUATION


@pytest.mark.slow
def test_matrix_4_of_7_with_hd() -> None:
    """The largest configuration in the suite (aux-info for seven parties dominates, ~1 min)."""
    outcome = presign(4, 7, (2, 4, 6, 7), (3, 1))
    assert not outcome.aborts
    message = b"4-of-7 treasury transfer"
    key = keys(4, 7)[2]
    signature = sign_with(outcome.results, message, HashScheme.KECCAK256, key)
    assert signature.public_key == derive(key.public_key, key.chain_code, (3, 1)).public_key
    check_independently(signature, message, HashScheme.KECCAK256)
