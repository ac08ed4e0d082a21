"""EVM transactions (signer/chains/evm.py, the in-process chain coordinator/evm_chain.py):
payloads cross-checked against eth-account, signatures attached and recovered, every transaction
submitted to a real EVM (py-evm), and a transfer signed end to end by the 2-of-3 threshold
signer."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import coincurve
import pytest
import rlp
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_fixtures import aux_info, keys
from rlp.sedes import big_endian_int

from coordinator.evm_chain import (
    InProcessChain,
    TransactionPending,
    TransactionRejected,
    TransactionReverted,
    UnknownTransaction,
)
from signer.chains.evm import (
    CHAIN_ID_MAX,
    MAX_DATA_BYTES,
    MAX_FEE_PER_GAS,
    MAX_GAS,
    NONCE_LIMIT,
    Eip1559Transfer,
    InvalidSignature,
    InvalidTransaction,
    LegacyTransfer,
    MalformedTransaction,
    address_of,
    chain_id_of,
    decode_signing_payload,
    intrinsic_gas,
    recover_sender,
    transaction_hash,
)
from signer.curve import Point, Q
from signer.errors import CryptoMisuse
from signer.protocol import flow
from signer.protocol.sign import HashScheme, Signature, message_digest

ETHER = 10**18
GWEI = 10**9
RECIPIENT = to_checksum_address("0x" + "5a" * 20)
# Runtime code PUSH1 0 PUSH1 0 REVERT behind an init code that copies and returns it.
REVERTING_CONTRACT = bytes.fromhex("6005600c60003960056000f3" + "60006000fd")


# --- helpers -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Wallet:
    secret: bytes
    public_key: Point
    address: str


def wallet_of(secret: bytes) -> Wallet:
    public_key = Point.base_mul(int.from_bytes(secret, "big"))
    return Wallet(secret, public_key, address_of(public_key))


def new_wallet() -> Wallet:
    return wallet_of(secrets.token_bytes(32))


FIXED = wallet_of(b"\x01" * 32)


def sign_payload(wallet: Wallet, payload: bytes) -> Signature:
    """A single-key signature over keccak(payload), low-s, as the threshold signer returns one."""
    digest = message_digest(payload, HashScheme.KECCAK256)
    compact = coincurve.PrivateKey(wallet.secret).sign_recoverable(digest, hasher=None)
    r, s, recid = (
        int.from_bytes(compact[:32], "big"),
        int.from_bytes(compact[32:64], "big"),
        compact[64],
    )
    if s > Q // 2:
        s, recid = Q - s, recid ^ 1
    return Signature(r, s, recid, digest, wallet.public_key)


def eip1559(chain: InProcessChain, sender: str, **overrides: Any) -> Eip1559Transfer:
    priority, max_fee = chain.suggest_fees()
    fields: dict[str, Any] = {
        "chain_id": chain.chain_id,
        "nonce": chain.nonce(sender),
        "max_priority_fee_per_gas": priority,
        "max_fee_per_gas": max_fee,
        "gas": 21_000,
        "to": RECIPIENT,
        "value": ETHER // 4,
    }
    return Eip1559Transfer(**{**fields, **overrides})


def legacy(chain: InProcessChain, sender: str, **overrides: Any) -> LegacyTransfer:
    fields: dict[str, Any] = {
        "chain_id": chain.chain_id,
        "nonce": chain.nonce(sender),
        "gas_price": chain.suggest_fees()[1],
        "gas": 21_000,
        "to": RECIPIENT,
        "value": ETHER // 4,
    }
    return LegacyTransfer(**{**fields, **overrides})


def eth_account_dict(tx: Eip1559Transfer | LegacyTransfer) -> dict[str, Any]:
    common = {
        "chainId": tx.chain_id,
        "nonce": tx.nonce,
        "gas": tx.gas,
        "to": tx.to,
        "value": tx.value,
        "data": tx.data,
    }
    if isinstance(tx, LegacyTransfer):
        return {**common, "gasPrice": tx.gas_price}
    access = [
        {"address": a, "storageKeys": ["0x" + k.hex() for k in ks]} for a, ks in tx.access_list
    ]
    return {
        **common,
        "type": 2,
        "maxPriorityFeePerGas": tx.max_priority_fee_per_gas,
        "maxFeePerGas": tx.max_fee_per_gas,
        "accessList": access,
    }


def with_raw_signature_fields(raw: bytes, v: int, r: int, s: int) -> bytes:
    """Re-encode a signed transaction with other (v, r, s): for signatures `with_signature`
    refuses to produce."""
    prefix, body = (raw[:1], raw[1:]) if raw[0] < 0xC0 else (b"", raw)
    items = rlp.decode(body)
    items[-3:] = [big_endian_int.serialize(x) for x in (v, r, s)]
    return prefix + rlp.encode(items)


@pytest.fixture
def chain() -> InProcessChain:
    return InProcessChain()


@pytest.fixture
def funded(chain: InProcessChain) -> Wallet:
    wallet = new_wallet()
    chain.fund(wallet.address, 2 * ETHER)
    return wallet


# --- strategies ----------------------------------------------------------------------------------
addresses = st.binary(min_size=20, max_size=20).filter(any).map(to_checksum_address)
small = st.integers(0, 2**64 - 2)
access_lists = st.lists(
    st.tuples(addresses, st.lists(st.binary(min_size=32, max_size=32), max_size=2).map(tuple)),
    max_size=2,
).map(tuple)


@st.composite
def eip1559_transfers(draw: st.DrawFn) -> Eip1559Transfer:
    data = draw(st.binary(max_size=64))
    access = draw(access_lists)
    max_fee = draw(st.integers(0, MAX_FEE_PER_GAS))
    return Eip1559Transfer(
        chain_id=draw(st.integers(1, CHAIN_ID_MAX)),
        nonce=draw(small),
        max_priority_fee_per_gas=draw(st.integers(0, max_fee)),
        max_fee_per_gas=max_fee,
        gas=draw(st.integers(intrinsic_gas(data, access), MAX_GAS)),
        to=draw(addresses),
        value=draw(st.integers(0, 2**256 - 1)),
        data=data,
        access_list=access,
    )


@st.composite
def legacy_transfers(draw: st.DrawFn) -> LegacyTransfer:
    data = draw(st.binary(max_size=64))
    return LegacyTransfer(
        chain_id=draw(st.integers(1, CHAIN_ID_MAX)),
        nonce=draw(small),
        gas_price=draw(st.integers(0, MAX_FEE_PER_GAS)),
        gas=draw(st.integers(intrinsic_gas(data), MAX_GAS)),
        to=draw(addresses),
        value=draw(st.integers(0, 2**256 - 1)),
        data=data,
    )


transfers = st.one_of(eip1559_transfers(), legacy_transfers())


# --- addresses -----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(1, Q - 1))
def test_address_of_matches_eth_account(secret: int) -> None:
    assert (
        address_of(Point.base_mul(secret)) == Account.from_key(secret.to_bytes(32, "big")).address
    )


def test_address_of_identity_refused() -> None:
    with pytest.raises(CryptoMisuse):
        address_of(Point.identity())


# --- payloads: cross-checks with eth-account and the strict decoder ------------------------------
@settings(max_examples=40, deadline=None)
@given(eip1559_transfers())
def test_eip1559_payload_hash_is_eth_accounts(tx: Eip1559Transfer) -> None:
    payload = tx.signing_payload()
    assert payload[0] == 2
    expected = TypedTransaction.from_dict(eth_account_dict(tx)).hash()
    assert message_digest(payload, HashScheme.KECCAK256) == expected


@settings(max_examples=20, deadline=None)
@given(transfers)
def test_signed_encoding_is_eth_accounts(tx: Eip1559Transfer | LegacyTransfer) -> None:
    """libsecp256k1 and eth-account both sign deterministically (RFC 6979), so the same key over
    the same transaction gives byte-identical raw transactions; that checks the legacy EIP-155
    payload and both signed encodings against an independent encoder."""
    signature = sign_payload(FIXED, tx.signing_payload())
    raw = tx.with_signature(signature.r, signature.s, signature.recovery_id)
    expected = Account.sign_transaction(eth_account_dict(tx), FIXED.secret)
    assert raw == bytes(expected.raw_transaction)
    assert transaction_hash(raw) == bytes(expected.hash)
    assert recover_sender(raw) == FIXED.address
    assert chain_id_of(raw) == tx.chain_id


@settings(max_examples=60, deadline=None)
@given(transfers)
def test_payload_decodes_to_the_same_transfer(tx: Eip1559Transfer | LegacyTransfer) -> None:
    assert decode_signing_payload(tx.signing_payload()) == tx


# --- accepted by the EVM -------------------------------------------------------------------------
def test_eip1559_transfer_accepted_and_balances_exact(
    chain: InProcessChain, funded: Wallet
) -> None:
    tx = eip1559(chain, funded.address)
    raw = tx.attach(sign_payload(funded, tx.signing_payload()))
    assert recover_sender(raw) == funded.address
    base_fee = chain.base_fee()
    sender_before, recipient_before = chain.balance(funded.address), chain.balance(RECIPIENT)

    receipt = chain.receipt(chain.send_raw(raw))

    assert receipt.success and receipt.sender == funded.address and receipt.to == RECIPIENT
    assert receipt.tx_hash == transaction_hash(raw)
    assert receipt.gas_used == 21_000
    assert receipt.effective_gas_price == min(
        tx.max_fee_per_gas, base_fee + tx.max_priority_fee_per_gas
    )
    assert chain.balance(funded.address) == sender_before - tx.value - receipt.fee
    assert chain.balance(RECIPIENT) == recipient_before + tx.value
    assert chain.nonce(funded.address) == tx.nonce + 1


def test_legacy_transfer_accepted_and_balances_exact(chain: InProcessChain, funded: Wallet) -> None:
    tx = legacy(chain, funded.address)
    signature = sign_payload(funded, tx.signing_payload())
    raw = tx.with_signature(signature.r, signature.s, signature.recovery_id)
    v = rlp.decode(raw)[6]
    assert big_endian_int.deserialize(v) == signature.recovery_id + 35 + 2 * chain.chain_id
    assert recover_sender(raw) == funded.address
    sender_before = chain.balance(funded.address)

    receipt = chain.receipt(chain.send_raw(raw))

    assert receipt.success and receipt.effective_gas_price == tx.gas_price
    assert chain.balance(funded.address) == sender_before - tx.value - 21_000 * tx.gas_price
    assert chain.balance(RECIPIENT) == tx.value


def test_calldata_and_access_list_cost_exactly_the_intrinsic_gas(
    chain: InProcessChain, funded: Wallet
) -> None:
    """Our intrinsic-gas rule agrees with py-evm: a call to an account without code uses exactly
    it, both where the EIP-7623 calldata floor binds and where the EIP-2028/2930 cost does."""
    for data, access in [
        (b"\x00\x07" * 40, ()),
        (b"\xa9\x05\x9c\xbb" + b"\x00" * 60, ((RECIPIENT, (b"\x01" * 32, b"\x02" * 32)),)),
    ]:
        gas = intrinsic_gas(data, access)
        tx = eip1559(chain, funded.address, gas=gas, data=data, access_list=access, value=0)
        receipt = chain.receipt(
            chain.send_raw(tx.attach(sign_payload(funded, tx.signing_payload())))
        )
        assert receipt.gas_used == gas


def test_reverted_call_raises_and_charges_only_gas(chain: InProcessChain, funded: Wallet) -> None:
    contract = chain.deploy(REVERTING_CONTRACT)
    tx = eip1559(chain, funded.address, to=contract, gas=50_000)
    before = chain.balance(funded.address)
    raw = tx.attach(sign_payload(funded, tx.signing_payload()))
    with pytest.raises(TransactionReverted) as caught:
        chain.send_raw(raw)
    receipt = caught.value.receipt
    assert not receipt.success and receipt.tx_hash == transaction_hash(raw)
    assert chain.receipt(receipt.tx_hash) == receipt and chain.nonce(funded.address) == 1
    assert chain.balance(funded.address) == before - receipt.fee
    assert chain.balance(contract) == 0


# --- refused by the EVM or by recovery -----------------------------------------------------------
def test_signature_for_another_chain_rejected(chain: InProcessChain, funded: Wallet) -> None:
    here = eip1559(chain, funded.address)
    elsewhere = dataclasses.replace(here, chain_id=1)
    signature = sign_payload(funded, elsewhere.signing_payload())
    before = chain.balance(funded.address)

    # Complete and valid for chain 1: the chain refuses it.
    raw_elsewhere = elsewhere.attach(signature)
    assert recover_sender(raw_elsewhere) == funded.address
    with pytest.raises(TransactionRejected, match="chain id 1,"):
        chain.send_raw(raw_elsewhere)

    # Attached to this chain's transaction, it recovers to somebody else, who cannot pay.
    raw_here = here.with_signature(signature.r, signature.s, signature.recovery_id)
    assert recover_sender(raw_here) != funded.address
    with pytest.raises(TransactionRejected, match="balance"):
        chain.send_raw(raw_here)
    with pytest.raises(InvalidSignature) as caught:
        here.attach(signature)
    assert caught.value.field == "digest"

    assert chain.balance(funded.address) == before and chain.nonce(funded.address) == here.nonce


def test_legacy_signature_for_another_chain_rejected(chain: InProcessChain, funded: Wallet) -> None:
    elsewhere = legacy(chain, funded.address, chain_id=56)
    signature = sign_payload(funded, elsewhere.signing_payload())
    raw = elsewhere.attach(signature)
    assert chain_id_of(raw) == 56
    with pytest.raises(TransactionRejected, match="chain id 56,"):
        chain.send_raw(raw)
    assert chain.nonce(funded.address) == 0


def test_unprotected_legacy_transaction_rejected(chain: InProcessChain, funded: Wallet) -> None:
    tx = legacy(chain, funded.address)
    unsigned = [tx.nonce, tx.gas_price, tx.gas, bytes.fromhex(tx.to[2:]), tx.value, tx.data]
    signature = sign_payload(funded, rlp.encode(unsigned))
    raw = rlp.encode([*unsigned, 27 + signature.recovery_id, signature.r, signature.s])
    assert recover_sender(raw) == funded.address and chain_id_of(raw) is None
    with pytest.raises(TransactionRejected, match="unprotected"):
        chain.send_raw(raw)


@pytest.mark.parametrize("kind", ["eip1559", "legacy"])
def test_high_s_signature_rejected(chain: InProcessChain, funded: Wallet, kind: str) -> None:
    """EIP-2: (r, q − s) with the other parity is the same signature mathematically (eth-account
    still recovers the sender) but the EVM accepts only low s, and `with_signature` refuses it."""
    tx = eip1559(chain, funded.address) if kind == "eip1559" else legacy(chain, funded.address)
    signature = sign_payload(funded, tx.signing_payload())
    high_s, flipped = Q - signature.s, signature.recovery_id ^ 1
    with pytest.raises(InvalidSignature) as caught:
        tx.with_signature(signature.r, high_s, flipped)
    assert caught.value.field == "s"

    low_raw = tx.with_signature(signature.r, signature.s, signature.recovery_id)
    v = flipped if kind == "eip1559" else flipped + 35 + 2 * tx.chain_id
    raw = with_raw_signature_fields(low_raw, v, signature.r, high_s)
    assert recover_sender(raw) == funded.address
    before = chain.balance(funded.address)
    with pytest.raises(TransactionRejected):
        chain.send_raw(raw)
    assert chain.balance(funded.address) == before
    assert chain.receipt(chain.send_raw(low_raw)).success  # only s made the difference


def test_replayed_transaction_rejected_and_state_unchanged(
    chain: InProcessChain, funded: Wallet
) -> None:
    tx = eip1559(chain, funded.address)
    raw = tx.attach(sign_payload(funded, tx.signing_payload()))
    chain.send_raw(raw)
    balances = chain.balance(funded.address), chain.balance(RECIPIENT)
    with pytest.raises(TransactionRejected, match="nonce") as caught:
        chain.send_raw(raw)
    assert caught.value.tx_hash == transaction_hash(raw)
    assert (chain.balance(funded.address), chain.balance(RECIPIENT)) == balances


def test_insufficient_funds_rejected(chain: InProcessChain, funded: Wallet) -> None:
    tx = eip1559(chain, funded.address, value=3 * ETHER)
    with pytest.raises(TransactionRejected, match="balance"):
        chain.send_raw(tx.attach(sign_payload(funded, tx.signing_payload())))


def test_max_fee_below_base_fee_rejected(chain: InProcessChain, funded: Wallet) -> None:
    tx = eip1559(chain, funded.address, max_fee_per_gas=1, max_priority_fee_per_gas=1)
    with pytest.raises(TransactionRejected, match="base fee"):
        chain.send_raw(tx.attach(sign_payload(funded, tx.signing_payload())))


# --- attach --------------------------------------------------------------------------------------
def test_attach_refuses_unrepresentable_recovery_id() -> None:
    wallet = new_wallet()
    tx = Eip1559Transfer(1, 0, GWEI, 2 * GWEI, 21_000, RECIPIENT, 1)
    signature = dataclasses.replace(sign_payload(wallet, tx.signing_payload()), recovery_id=2)
    with pytest.raises(InvalidSignature) as caught:
        tx.attach(signature)
    assert caught.value.field == "recovery_id"


def test_attach_refuses_signature_of_another_key() -> None:
    wallet, other = new_wallet(), new_wallet()
    tx = Eip1559Transfer(1, 0, GWEI, 2 * GWEI, 21_000, RECIPIENT, 1)
    signature = dataclasses.replace(
        sign_payload(wallet, tx.signing_payload()), public_key=other.public_key
    )
    with pytest.raises(InvalidSignature, match=other.address) as caught:
        tx.attach(signature)
    assert caught.value.field == "recovery_id"


@pytest.mark.parametrize(
    ("r", "s", "y_parity", "field"),
    [
        (0, 1, 0, "r"),
        (Q, 1, 0, "r"),
        (1, 0, 0, "s"),
        (1, Q // 2 + 1, 0, "s"),
        (1, 1, 2, "y_parity"),
        (1, 1, -1, "y_parity"),
        (1, 1, True, "y_parity"),
        ("1", 1, 0, "r"),
    ],
)
def test_with_signature_bounds(r: Any, s: Any, y_parity: Any, field: str) -> None:
    for tx in (
        Eip1559Transfer(1, 0, GWEI, 2 * GWEI, 21_000, RECIPIENT, 1),
        LegacyTransfer(1, 0, GWEI, 21_000, RECIPIENT, 1),
    ):
        with pytest.raises(InvalidSignature) as caught:
            tx.with_signature(r, s, y_parity)
        assert caught.value.field == field


# --- field validation: one case each -------------------------------------------------------------
BASE_1559: dict[str, Any] = {
    "chain_id": 1,
    "nonce": 0,
    "max_priority_fee_per_gas": GWEI,
    "max_fee_per_gas": 30 * GWEI,
    "gas": 21_000,
    "to": RECIPIENT,
    "value": ETHER,
}
BASE_LEGACY: dict[str, Any] = {
    "chain_id": 1,
    "nonce": 0,
    "gas_price": 30 * GWEI,
    "gas": 21_000,
    "to": RECIPIENT,
    "value": ETHER,
}
SHARED_CASES = [
    ("chain-id-zero", {"chain_id": 0}, "chain_id"),
    ("chain-id-negative", {"chain_id": -1}, "chain_id"),
    ("chain-id-too-large", {"chain_id": CHAIN_ID_MAX + 1}, "chain_id"),
    ("chain-id-bool", {"chain_id": True}, "chain_id"),
    ("chain-id-text", {"chain_id": "1"}, "chain_id"),
    ("nonce-negative", {"nonce": -1}, "nonce"),
    ("nonce-eip2681", {"nonce": NONCE_LIMIT}, "nonce"),
    ("to-lowercase", {"to": RECIPIENT.lower()}, "to"),
    ("to-short", {"to": RECIPIENT[:-2]}, "to"),
    ("to-no-prefix", {"to": RECIPIENT[2:]}, "to"),
    ("to-not-hex", {"to": "0x" + "zz" * 20}, "to"),
    ("to-bytes", {"to": bytes.fromhex(RECIPIENT[2:])}, "to"),
    ("to-zero-address", {"to": "0x" + "0" * 40}, "to"),
    ("value-negative", {"value": -1}, "value"),
    ("value-uint256-overflow", {"value": 2**256}, "value"),
    ("data-text", {"data": "0xa9059cbb"}, "data"),
    ("data-too-large", {"data": b"\x01" * (MAX_DATA_BYTES + 1)}, "data"),
    ("gas-below-transfer", {"gas": 20_999}, "gas"),
    ("gas-below-calldata-cost", {"data": b"\x01" * 32}, "gas"),
    ("gas-absurd", {"gas": MAX_GAS + 1}, "gas"),
]
EIP1559_CASES = [
    ("priority-above-max-fee", {"max_priority_fee_per_gas": 31 * GWEI}, "max_priority_fee_per_gas"),
    ("max-fee-negative", {"max_fee_per_gas": -1}, "max_fee_per_gas"),
    ("max-fee-absurd", {"max_fee_per_gas": MAX_FEE_PER_GAS + 1}, "max_fee_per_gas"),
    ("priority-negative", {"max_priority_fee_per_gas": -1}, "max_priority_fee_per_gas"),
    ("access-list-not-tuple", {"access_list": [(RECIPIENT, ())]}, "access_list"),
    ("access-list-entry-shape", {"access_list": ((RECIPIENT,),)}, "access_list[0]"),
    (
        "access-list-address",
        {"access_list": ((RECIPIENT.lower(), ()),)},
        "access_list[0].address",
    ),
    (
        "access-list-keys-not-tuple",
        {"access_list": ((RECIPIENT, [b"\x01" * 32]),)},
        "access_list[0].storage_keys",
    ),
    (
        "access-list-key-length",
        {"access_list": ((RECIPIENT, (b"\x01" * 31,)),)},
        "access_list[0].storage_keys[0]",
    ),
    ("gas-below-access-list-cost", {"access_list": ((RECIPIENT, ()),)}, "gas"),
]
LEGACY_CASES = [
    ("gas-price-negative", {"gas_price": -1}, "gas_price"),
    ("gas-price-absurd", {"gas_price": MAX_FEE_PER_GAS + 1}, "gas_price"),
]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [pytest.param(o, f, id=name) for name, o, f in SHARED_CASES + EIP1559_CASES],
)
def test_eip1559_field_rejected(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidTransaction) as caught:
        Eip1559Transfer(**{**BASE_1559, **overrides})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [pytest.param(o, f, id=name) for name, o, f in SHARED_CASES + LEGACY_CASES],
)
def test_legacy_field_rejected(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidTransaction) as caught:
        LegacyTransfer(**{**BASE_LEGACY, **overrides})
    assert caught.value.field == field


def test_checksum_error_names_the_expected_spelling() -> None:
    with pytest.raises(InvalidTransaction, match=RECIPIENT):
        Eip1559Transfer(**{**BASE_1559, "to": RECIPIENT.lower()})


# --- decoding ------------------------------------------------------------------------------------
def test_decode_rejects_malformed_payloads() -> None:
    tx = Eip1559Transfer(**BASE_1559)
    payload = tx.signing_payload()
    legacy_payload = LegacyTransfer(**BASE_LEGACY).signing_payload()
    fields = rlp.decode(payload[1:])
    non_canonical = b"\x02" + rlp.encode([b"\x00\x01", *fields[1:]])
    legacy_fields = rlp.decode(legacy_payload)
    legacy_slots = rlp.encode([*legacy_fields[:7], b"\x01", b""])
    signed = tx.attach(sign_payload(new_wallet(), payload))
    for bad in [b"", payload + b"\x00", b"\x01" + payload[1:], non_canonical, legacy_slots, signed]:
        with pytest.raises(MalformedTransaction):
            decode_signing_payload(bad)


def test_decode_validates_the_decoded_fields() -> None:
    fields = rlp.decode(Eip1559Transfer(**BASE_1559).signing_payload()[1:])
    with pytest.raises(InvalidTransaction) as caught:
        decode_signing_payload(b"\x02" + rlp.encode([b"", *fields[1:]]))  # chain id 0
    assert caught.value.field == "chain_id"


@pytest.mark.parametrize("raw", [b"", b"\x05\x00", b"\xf8\x01", b"\x02\xc0", b"junk"])
def test_malformed_raw_transactions(chain: InProcessChain, raw: bytes) -> None:
    with pytest.raises(MalformedTransaction):
        recover_sender(raw)
    with pytest.raises(MalformedTransaction):
        chain.send_raw(raw)


# --- the chain wrapper ---------------------------------------------------------------------------
def test_fees_and_funding(chain: InProcessChain) -> None:
    priority, max_fee = chain.suggest_fees()
    assert 0 < priority <= max_fee and max_fee >= chain.base_fee() > 0
    wallet = new_wallet()
    receipt = chain.fund(wallet.address, 123)
    assert receipt.success and receipt.to == wallet.address and receipt.sender == chain.faucet
    assert chain.balance(wallet.address) == 123 and chain.nonce(wallet.address) == 0


@pytest.mark.parametrize(
    ("address", "wei", "field"),
    [(RECIPIENT.lower(), 1, "address"), (RECIPIENT, 0, "wei"), (RECIPIENT, -5, "wei")],
)
def test_fund_rejects_bad_input(chain: InProcessChain, address: str, wei: int, field: str) -> None:
    with pytest.raises(InvalidTransaction) as caught:
        chain.fund(address, wei)
    assert caught.value.field == field


def test_unknown_receipt(chain: InProcessChain) -> None:
    with pytest.raises(UnknownTransaction):
        chain.receipt(b"\x11" * 32)
    with pytest.raises(InvalidTransaction):
        chain.receipt(b"\x11" * 31)


def test_pending_transaction_times_out_then_mines(funded: Wallet) -> None:
    chain = InProcessChain(receipt_timeout=0.05)
    chain.fund(funded.address, ETHER)
    chain._tester.disable_auto_mine_transactions()  # a node that does not mine at once
    tx = eip1559(chain, funded.address)
    raw = tx.attach(sign_payload(funded, tx.signing_payload()))
    with pytest.raises(TransactionPending):
        chain.send_raw(raw)
    chain._tester.mine_blocks(1)
    assert chain.receipt(transaction_hash(raw)).success


# --- end to end with the threshold signer --------------------------------------------------------
def test_threshold_signed_transfer_accepted(chain: InProcessChain) -> None:
    """2-of-3: presign among parties 1 and 3, sign the EIP-1559 payload, attach; the EVM accepts
    the transfer from the wallet's address."""
    shares, aux = keys(2, 3), aux_info(3)
    public_key = shares[1].public_key
    sender = address_of(public_key)
    chain.fund(sender, ETHER)

    tx = eip1559(chain, sender, value=ETHER // 10)
    presignatures = flow.run_presign(shares, aux, (1, 3), ())
    signature = flow.sign(
        presignatures, tx.signing_payload(), HashScheme.KECCAK256, shares[1].public_data()
    )
    assert signature.public_key == public_key
    raw = tx.attach(signature)
    assert recover_sender(raw) == sender

    before = chain.balance(sender)
    receipt = chain.receipt(chain.send_raw(raw))
    assert receipt.success and receipt.sender == sender
    assert chain.balance(sender) == before - tx.value - receipt.fee
    assert chain.balance(RECIPIENT) == tx.value


def test_missing_evm_extra_says_what_to_install() -> None:
    """Without eth-tester (a production install has no `evm` extra) the codec and the local
    chain module still import, and making an in-process chain names the extra."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "sys.modules['eth_tester'] = None\n"  # as if not installed
        "import signer.chains.evm\n"
        "import coordinator.evm_chain\n"
        "try:\n"
        "    coordinator.evm_chain.InProcessChain()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    command = [sys.executable, "-c", probe]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "tessera-custody[evm]" in done.stdout and "eth_tester" in done.stdout
