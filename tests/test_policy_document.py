"""Policy documents, transaction intents and sanctions import: loading, canonical hashing and
every kind of bad input (each a typed error naming the path and the value)."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from policies.canonical import canonical_json
from policies.document import (
    AMOUNT_CONTEXT,
    PolicyDocument,
    amount_str,
    load_policy,
    parse_amount,
    parse_policy,
)
from policies.errors import (
    IntentSchemaError,
    PolicyError,
    PolicySchemaError,
    SanctionsImportError,
    UnknownOfficerError,
)
from policies.intent import TransactionIntent, load_intent, parse_intent
from policies.sanctions import (
    load_sanctions,
    next_version_with_blacklist,
    parse_sanctions_csv,
    parse_sanctions_json,
)
from policies.structured import MAX_NESTING, parse_structured_text, read_structured_file

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
EXAMPLE = FIXTURES / "example.yaml"
ADDR_A = "0x4c16027649390E3a79dDd56B0AA5a43CdB30e485"
ADDR_RANDOM = "0xDd98b0535AF1475c64b312a50e578f42957b6771"


def raw() -> dict[str, Any]:
    data = read_structured_file(EXAMPLE)
    assert isinstance(data, dict)
    return copy.deepcopy(data)


def schema_error(obj: Any) -> PolicySchemaError:
    with pytest.raises(PolicySchemaError) as info:
        parse_policy(obj, source="test.yaml")
    return info.value


# --- loading and canonical form ----------------------------------------------------------------


def test_example_loads_with_every_section() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.version == 1 and policy.previous is None
    assert [o.id for o in policy.officers] == ["alice", "bob", "carol", "dave", "erin"]
    assert policy.governance.quorum == 3 and policy.governance.freeze_quorum == 1
    assert policy.groups["treasury"] == ("alice", "bob", "carol")
    assert policy.assets["USDC"].decimals == 6
    assert [r.id for r in policy.rules] == [
        "hot-small-eth",
        "hot-small-usdc",
        "hot-large",
        "cold-all",
    ]
    assert policy.rules[0].match.amount is not None
    assert policy.rules[0].match.amount.max == Decimal(1)
    assert [v.id for v in policy.limits_for("hot-1", "ETH")] == ["hot-eth-daily"]
    assert policy.limits_for("cold-1", "ETH") == ()
    assert policy.limits_for("nope", "ETH") == ()
    assert len(policy.policy_hash()) == 64


def test_yaml_and_json_of_the_same_policy_hash_the_same() -> None:
    yaml_policy = load_policy(EXAMPLE)
    json_policy = load_policy(FIXTURES / "example.json")
    assert yaml_policy.policy_hash() == json_policy.policy_hash()
    assert yaml_policy.canonical() == json_policy.canonical()
    assert yaml_policy.canonical() == canonical_json(yaml_policy.canonical_object())


def test_json_content_is_detected_without_a_suffix(tmp_path: Path) -> None:
    target = tmp_path / "policy.txt"
    target.write_text((FIXTURES / "example.json").read_text())
    assert load_policy(target).policy_hash() == load_policy(EXAMPLE).policy_hash()


def test_explicit_defaults_hash_like_omitted_ones() -> None:
    explicit = raw()
    explicit["format"] = "tessera.policy/1"
    explicit["previous"] = None
    explicit["governance"]["loosening_timelock_seconds"] = 86400
    explicit["blacklist"][0]["chain_id"] = None
    explicit["rules"][3]["match"] = {"tiers": ["cold"], "destination": "any"}
    explicit["whitelists"]["exchanges"][0]["activation_delay_seconds"] = 0
    assert parse_policy(explicit).policy_hash() == load_policy(EXAMPLE).policy_hash()


def test_equal_amounts_written_differently_hash_the_same() -> None:
    other = raw()
    other["rules"][0]["match"]["amount"]["max"] = "1.000000000000000000"
    other["velocity_limits"][0]["max_amount"] = "10.0"
    assert parse_policy(other).policy_hash() == load_policy(EXAMPLE).policy_hash()


@settings(deadline=None)
@given(st.randoms(use_true_random=False))
def test_order_of_unordered_collections_does_not_change_the_hash(rnd: Any) -> None:
    shuffled = raw()
    for key in ("officers", "wallets", "blacklist", "velocity_limits"):
        rnd.shuffle(shuffled[key])
    rnd.shuffle(shuffled["whitelists"]["exchanges"])
    rnd.shuffle(shuffled["groups"]["custody-board"])
    rnd.shuffle(shuffled["wallets"][0]["chains"])
    shuffled["rules"][0]["match"]["tiers"] = ["hot"]
    assert parse_policy(shuffled).policy_hash() == load_policy(EXAMPLE).policy_hash()


def test_rule_order_changes_the_hash() -> None:
    swapped = raw()
    swapped["rules"][0], swapped["rules"][1] = swapped["rules"][1], swapped["rules"][0]
    assert parse_policy(swapped).policy_hash() != load_policy(EXAMPLE).policy_hash()


def test_any_meaningful_change_changes_the_hash() -> None:
    changed = raw()
    changed["velocity_limits"][0]["max_amount"] = "10.000000000000000001"
    assert parse_policy(changed).policy_hash() != load_policy(EXAMPLE).policy_hash()


def test_document_is_immutable() -> None:
    policy = load_policy(EXAMPLE)
    with pytest.raises(ValidationError):
        policy.version = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.groups["treasury"] = ("alice",)  # type: ignore[index]
    with pytest.raises(ValidationError):
        policy.rules[0].action = "BLOCK"  # type: ignore[misc]


def test_officer_lookup() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.officer("dave").algorithm == "p256"
    with pytest.raises(UnknownOfficerError) as info:
        policy.officer("mallory")
    assert info.value.officer_id == "mallory" and "mallory" in str(info.value)
    assert isinstance(info.value, PolicyError)


def test_uppercase_public_key_hex_is_normalised() -> None:
    upper = raw()
    upper["officers"][0]["public_key"] = upper["officers"][0]["public_key"].upper()
    assert parse_policy(upper).policy_hash() == load_policy(EXAMPLE).policy_hash()


def test_unquoted_address_and_timestamp_in_yaml_stay_text(tmp_path: Path) -> None:
    text = (
        EXAMPLE.read_text()
        .replace(f'"{ADDR_A}"', ADDR_A)
        .replace('"2026-03-01T09:00:00Z"', "2026-03-01T09:00:00Z")
    )
    assert f'"{ADDR_A}"' not in text
    target = tmp_path / "p.yaml"
    target.write_text(text)
    assert load_policy(target).policy_hash() == load_policy(EXAMPLE).policy_hash()


# --- amounts -----------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10**18 - 1),
)
def test_amounts_are_exact_at_18_decimals(whole: int, fraction: int) -> None:
    text = f"{whole}.{fraction:018d}"
    amount = parse_amount(text)
    # Scaling to base units (wei) is exact: no digit is lost anywhere.
    assert amount.scaleb(18, AMOUNT_CONTEXT) == whole * 10**18 + fraction
    assert amount == AMOUNT_CONTEXT.add(Decimal(whole), Decimal(fraction).scaleb(-18))
    assert parse_amount(amount_str(amount)) == amount
    policy = raw()
    policy["rules"][0]["match"]["amount"]["max"] = text
    parsed = parse_policy(policy)
    assert parsed.rules[0].match.amount is not None
    assert parsed.rules[0].match.amount.max == amount


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1.5, "floats are not allowed"),
        (2, "quoted decimal strings"),
        (True, "not booleans"),
        ("-1", "negative"),
        ("1e3", "exponent notation"),
        ("NaN", "not a decimal string"),
        ("1,5", "not a decimal string"),
        (" 1", "not a decimal string"),
        ("1" + "0" * 30 + ".1", "absurd amount"),
        ("0." + "0" * 36 + "1", "more than 36 decimal places"),
        (None, "decimal strings, not NoneType"),
    ],
)
def test_bad_amounts_are_refused(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_amount(value)
    policy = raw()
    policy["velocity_limits"][0]["max_amount"] = value
    error = schema_error(policy)
    assert error.path == "velocity_limits[0].max_amount"
    assert reason in error.reason
    assert error.value == value
    assert "test.yaml: velocity_limits[0].max_amount" in str(error)


def test_decimal_instances_keep_every_digit() -> None:
    # 40 significant digits: more than the default decimal context (28) would keep.
    value = Decimal("123456789012345678901.234567890123456789")
    assert parse_amount(value) == value
    built = TransactionIntent(
        request_id="r",
        wallet="hot-1",
        chain_id=1,
        asset="ETH",
        destination=ADDR_A,
        amount=value,
        initiator="svc",
    )
    assert built.amount == value
    assert built.canonical_object()["amount"] == "123456789012345678901.234567890123456789"


def test_negative_decimal_instance_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_amount(Decimal("-0.1"))
    with pytest.raises(ValueError, match="finite"):
        parse_amount(Decimal("Infinity"))


def test_bound_of_exactly_ten_to_the_thirty_is_accepted() -> None:
    assert parse_amount("1" + "0" * 30) == Decimal(10) ** 30


# --- schema errors name the path and the value ---------------------------------------------------


def _set(path: list[Any], value: Any) -> Any:
    def mutate(obj: dict[str, Any]) -> None:
        target: Any = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Any:
    def mutate(obj: dict[str, Any]) -> None:
        target: Any = obj
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


WL0 = ["whitelists", "exchanges", 0]

BAD_DOCUMENTS = [
    # unknown fields, at every level
    ("unknown-top", _set(["colour"], "red"), "colour", "unknown field"),
    ("unknown-rule", _set(["rules", 1, "priority"], 3), "rules[1].priority", "unknown field"),
    ("unknown-match", _set(["rules", 0, "match", "memo"], "x"), "rules[0].match.memo", "unknown"),
    ("unknown-entry", _set([*WL0, "note"], "x"), "whitelists.exchanges[0].note", "unknown"),
    ("missing", _delete(["governance"]), "governance", "required field is missing"),
    ("format", _set(["format"], "tessera.policy/9"), "format", "tessera.policy/1"),
    # addresses
    (
        "lowercase",
        _set([*WL0, "address"], ADDR_A.lower()),
        "whitelists.exchanges[0].address",
        "no EIP-55 checksum",
    ),
    (
        "uppercase",
        _set([*WL0, "address"], "0x" + ADDR_A[2:].upper()),
        "whitelists.exchanges[0].address",
        "no EIP-55 checksum",
    ),
    (
        "checksum",
        _set([*WL0, "address"], ADDR_A.replace("dDd", "ddD")),
        "whitelists.exchanges[0].address",
        "checksum mismatch",
    ),
    ("short", _set([*WL0, "address"], ADDR_A[:-2]), "whitelists.exchanges[0].address", "20-byte"),
    ("int-address", _set([*WL0, "address"], 0x1234), "whitelists.exchanges[0].address", "quoted"),
    (
        "bl-checksum",
        _set(["blacklist", 1, "address"], "0xA065189F56B4a09D29aF0540fDc5321A626C2Ac6"),
        "blacklist[1].address",
        "checksum mismatch",
    ),
    (
        "wl-dup",
        _set(["whitelists", "exchanges", 1, "address"], ADDR_A),
        "whitelists.exchanges[1]",
        "duplicate",
    ),
    (
        "delay-no-date",
        _delete(["whitelists", "exchanges", 3, "added_at"]),
        "whitelists.exchanges[3].added_at",
        "counted from added_at",
    ),
    (
        "naive-date",
        _set(["whitelists", "exchanges", 3, "added_at"], "2026-03-01T09:00:00"),
        "whitelists.exchanges[3].added_at",
        "no UTC offset",
    ),
    (
        "date-only",
        _set(["whitelists", "exchanges", 3, "added_at"], "2026-03-01"),
        "whitelists.exchanges[3].added_at",
        "RFC 3339",
    ),
    (
        "delay-absurd",
        _set(["whitelists", "exchanges", 3, "activation_delay_seconds"], 10**9),
        "whitelists.exchanges[3].activation_delay_seconds",
        "between 0 and",
    ),
    ("chain-zero", _set([*WL0, "chain_id"], 0), "whitelists.exchanges[0].chain_id", "between 1"),
    ("chain-bool", _set([*WL0, "chain_id"], True), "whitelists.exchanges[0].chain_id", "integer"),
    ("chain-text", _set([*WL0, "chain_id"], "1"), "whitelists.exchanges[0].chain_id", "integer"),
    ("chain-huge", _set([*WL0, "chain_id"], 2**60), "whitelists.exchanges[0].chain_id", "between"),
    ("label-empty", _set([*WL0, "label"], ""), "whitelists.exchanges[0].label", "1–200"),
    ("wl-no-group", _set(["whitelists", "Bad Name"], []), 'whitelists["Bad Name"] (key)', "id"),
    # officers and governance
    ("officer-dup", _set(["officers", 1, "id"], "alice"), "officers[1].id", "duplicate officer id"),
    (
        "key-dup",
        _set(
            ["officers", 1, "public_key"],
            "a010a765c12228acefee12f87fc5859183a1aff8c0767ee6823ac06aeae279a6",
        ),
        "officers[1].public_key",
        "duplicate officer public key",
    ),
    (
        "ed-len",
        _set(["officers", 0, "public_key"], "00" * 33),
        "officers[0].public_key",
        "32 bytes",
    ),
    (
        "p256-prefix",
        _set(["officers", 3, "public_key"], "04" + "11" * 32),
        "officers[3].public_key",
        "SEC1 compressed",
    ),
    (
        "p256-off-curve",
        _set(["officers", 3, "public_key"], "02" + "ff" * 32),
        "officers[3].public_key",
        "not a point on P-256",
    ),
    ("key-not-hex", _set(["officers", 0, "public_key"], "zz"), "officers[0].public_key", "hex"),
    ("algorithm", _set(["officers", 0, "algorithm"], "rsa"), "officers[0].algorithm", "ed25519"),
    ("officer-id", _set(["officers", 0, "id"], "Alice!"), "officers[0].id", "not a valid id"),
    ("quorum-high", _set(["governance", "quorum"], 6), "governance.quorum", "more than the 5"),
    ("quorum-zero", _set(["governance", "quorum"], 0), "governance.quorum", "between 1"),
    ("freeze-high", _set(["governance", "freeze_quorum"], 4), "governance.freeze_quorum", "exceed"),
    ("no-officers", _set(["officers"], []), "officers", "at least 1"),
    (
        "member",
        _set(["groups", "treasury"], ["alice", "zed"]),
        "groups.treasury[1]",
        "not an officer",
    ),
    ("member-dup", _set(["groups", "treasury"], ["bob", "bob"]), "groups.treasury[1]", "duplicate"),
    ("group-empty", _set(["groups", "treasury"], []), "groups.treasury", "at least one officer"),
    # header
    ("version-zero", _set(["version"], 0), "version", "between 1"),
    ("version-text", _set(["version"], "1"), "version", "integer"),
    ("genesis-previous", _set(["previous"], "ab" * 32), "previous", "genesis"),
    ("previous-missing", _set(["version"], 2), "previous", "predecessor"),
    ("previous-bad", _set(["previous"], "XYZ"), "previous", "policy hash"),
    # wallets and assets
    ("wallet-dup", _set(["wallets", 1, "id"], "hot-1"), "wallets[1].id", "duplicate wallet id"),
    ("tier", _set(["wallets", 0, "tier"], "warm"), "wallets[0].tier", "hot"),
    ("chains-empty", _set(["wallets", 0, "chains"], []), "wallets[0].chains", "empty"),
    (
        "decimals",
        _set(["assets", "ETH", "decimals"], 40),
        "assets.ETH.decimals",
        "between 0 and 36",
    ),
    ("asset-symbol", _set(["assets", "E TH"], {"decimals": 1}), 'assets["E TH"] (key)', "symbol"),
    # rules
    ("rule-dup", _set(["rules", 1, "id"], "hot-small-eth"), "rules[1].id", "duplicate rule id"),
    (
        "rule-wallet",
        _set(["rules", 0, "match", "wallets"], ["nope"]),
        "rules[0].match.wallets[0]",
        "not defined",
    ),
    (
        "rule-asset",
        _set(["rules", 0, "match", "assets"], ["DAI"]),
        "rules[0].match.assets[0]",
        "not defined",
    ),
    ("rule-empty", _set(["rules", 0, "match", "chains"], []), "rules[0].match.chains", "empty"),
    ("both", _set(["rules", 0, "match", "wallets"], ["hot-1"]), "rules[0].match", "not both"),
    (
        "dest",
        _set(["rules", 0, "match", "destination"], "whitelist:nope"),
        "rules[0].match.destination",
        "no such whitelist",
    ),
    (
        "dest-syntax",
        _set(["rules", 0, "match", "destination"], "somewhere"),
        "rules[0].match.destination",
        "any, blacklist or whitelist",
    ),
    (
        "bl-allow",
        _set(["rules", 0, "match", "destination"], "blacklist"),
        "rules[0].action",
        "can only BLOCK",
    ),
    (
        "amount-no-assets",
        _delete(["rules", 0, "match", "assets"]),
        "rules[0].match.amount",
        "needs match.assets",
    ),
    (
        "amount-empty",
        _set(["rules", 0, "match", "amount"], {}),
        "rules[0].match.amount",
        "give min, max",
    ),
    (
        "min-max",
        _set(["rules", 0, "match", "amount", "min"], "2"),
        "rules[0].match.amount.max",
        "below min",
    ),
    (
        "usdc-digits",
        _set(["rules", 1, "match", "amount", "max"], "1.0000001"),
        "rules[1].match.amount.max",
        "more decimal places than USDC",
    ),
    (
        "amount-float",
        _set(["rules", 1, "match", "amount", "max"], 5000.0),
        "rules[1].match.amount.max",
        "floats are not allowed",
    ),
    ("no-approvals", _delete(["rules", 2, "approvals"]), "rules[2].approvals", "needs approvals"),
    (
        "extra-approvals",
        _set(["rules", 0, "approvals"], {"group": "treasury", "k": 1}),
        "rules[0].approvals",
        "only REQUIRE_APPROVAL",
    ),
    ("k-high", _set(["rules", 2, "approvals", "k"], 4), "rules[2].approvals.k", "only 3 members"),
    ("k-zero", _set(["rules", 2, "approvals", "k"], 0), "rules[2].approvals.k", "between 1"),
    (
        "group",
        _set(["rules", 2, "approvals", "group"], "nobody"),
        "rules[2].approvals.group",
        "no such approver group",
    ),
    ("action", _set(["rules", 0, "action"], "MAYBE"), "rules[0].action", "ALLOW"),
    (
        "initiator",
        _set(["rules", 0, "match", "initiators"], ["bad name"]),
        "rules[0].match.initiators[0]",
        "initiator",
    ),
    # velocity limits
    (
        "limit-both",
        _set(["velocity_limits", 0, "wallet"], "hot-1"),
        "velocity_limits[0]",
        "exactly one",
    ),
    ("limit-none", _delete(["velocity_limits", 0, "tier"]), "velocity_limits[0]", "exactly one"),
    (
        "limit-wallet",
        _set(["velocity_limits", 1, "wallet"], "nope"),
        "velocity_limits[1].wallet",
        "no such wallet",
    ),
    (
        "limit-asset",
        _set(["velocity_limits", 1, "asset"], "DAI"),
        "velocity_limits[1].asset",
        "not defined",
    ),
    (
        "limit-digits",
        _set(["velocity_limits", 1, "max_amount"], "0.0000001"),
        "velocity_limits[1].max_amount",
        "more decimal places than USDC",
    ),
    (
        "limit-window",
        _set(["velocity_limits", 0, "window_seconds"], 0),
        "velocity_limits[0].window_seconds",
        "between 1",
    ),
    (
        "limit-dup",
        _set(["velocity_limits", 1, "id"], "hot-eth-daily"),
        "velocity_limits[1].id",
        "duplicate",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [case[1:] for case in BAD_DOCUMENTS],
    ids=[case[0] for case in BAD_DOCUMENTS],
)
def test_bad_document_names_path_and_reason(mutate: Any, path: str, reason: str) -> None:
    policy = raw()
    mutate(policy)
    error = schema_error(policy)
    assert error.path == path, str(error)
    assert reason in error.reason, str(error)
    assert error.source == "test.yaml"
    assert str(error).startswith(f"test.yaml: {path}: ")


def test_every_problem_is_reported() -> None:
    policy = raw()
    policy["groups"]["treasury"] = ["alice", "zed"]
    policy["rules"][2]["approvals"]["group"] = "nobody"
    error = schema_error(policy)
    paths = [path for path, _value, _reason in error.problems]
    assert paths == ["groups.treasury[1]", "rules[2].approvals.group"]


def test_field_errors_are_all_reported_too() -> None:
    policy = raw()
    policy["version"] = "x"
    policy["rules"][0]["action"] = "MAYBE"
    error = schema_error(policy)
    assert {path for path, _v, _r in error.problems} == {"version", "rules[0].action"}


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(PolicySchemaError) as info:
        parse_policy([1, 2], source="list.yaml")  # type: ignore[arg-type]
    assert info.value.path == "$" and "mapping" in info.value.reason


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("broken.yaml", "version: 1\nofficers: [\n", "YAML error at line 3"),
        ("dup.yaml", "version: 1\nversion: 2\n", "duplicate key 'version'"),
        ("alias.yaml", "a: &x [1]\nb: *x\n", "aliases are not allowed"),
        ("broken.json", '{"version": 1,,}', "JSON syntax error at line 1"),
        ("dup.json", '{"version": 1, "version": 1}', "duplicate key 'version'"),
        ("nan.json", '{"version": NaN}', "NaN is not a JSON number"),
        ("list.yaml", "- 1\n- 2\n", "mapping"),
        ("empty.yaml", "", "mapping"),
    ],
)
def test_malformed_files_are_clear_errors(
    tmp_path: Path, name: str, text: str, reason: str
) -> None:
    target = tmp_path / name
    target.write_text(text)
    with pytest.raises(PolicySchemaError) as info:
        load_policy(target)
    assert reason in info.value.reason
    assert info.value.source == str(target)


def test_syntax_error_shows_the_offending_line(tmp_path: Path) -> None:
    target = tmp_path / "dup.yaml"
    target.write_text("version: 1\nversion: 2\n")
    with pytest.raises(PolicySchemaError) as info:
        load_policy(target)
    assert info.value.value == "version: 2"


def test_yaml_float_amount_is_an_error_naming_the_path(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace('max_amount: "10"', "max_amount: 10.5")
    target = tmp_path / "float.yaml"
    target.write_text(text)
    with pytest.raises(PolicySchemaError) as info:
        load_policy(target)
    assert info.value.path == "velocity_limits[0].max_amount"
    assert info.value.value == 10.5


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(PolicySchemaError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    target = tmp_path / "latin1.yaml"
    target.write_bytes(b"description: caf\xe9\n")
    with pytest.raises(PolicySchemaError, match="not UTF-8"):
        load_policy(target)


# --- intents -----------------------------------------------------------------------------------


def intent_obj(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "request_id": "wd-1",
        "wallet": "hot-1",
        "chain_id": 1,
        "asset": "ETH",
        "destination": ADDR_A,
        "amount": "1.5",
        "initiator": "withdrawal-service",
    }
    obj.update(changes)
    return obj


def test_intent_fixtures_load() -> None:
    intent = load_intent(FIXTURES / "intent-large.yaml")
    assert intent.amount == Decimal(5) and intent.chain_id == 1
    assert len(intent.digest()) == 32
    assert intent.digest_hex() == intent.digest().hex()


def test_intent_digest_is_canonical_and_binds_every_field() -> None:
    base = parse_intent(intent_obj())
    assert parse_intent(intent_obj(amount="1.50")).digest() == base.digest()
    assert base.canonical_object()["domain"] == "tessera.intent/1"
    for field, value in [
        ("request_id", "wd-2"),
        ("wallet", "cold-1"),
        ("chain_id", 137),
        ("asset", "USDC"),
        ("destination", ADDR_RANDOM),
        ("amount", "1.500000000000000001"),
        ("initiator", "ops"),
    ]:
        assert parse_intent(intent_obj(**{field: value})).digest() != base.digest(), field


@pytest.mark.parametrize(
    ("changes", "path", "reason"),
    [
        ({"amount": "0"}, "amount", "zero"),
        ({"amount": "-5"}, "amount", "negative"),
        ({"amount": 1.5}, "amount", "floats are not allowed"),
        ({"amount": "1" + "0" * 31}, "amount", "absurd"),
        ({"destination": ADDR_A.lower()}, "destination", "no EIP-55 checksum"),
        ({"destination": ADDR_A.replace("dDd", "ddD")}, "destination", "checksum mismatch"),
        ({"chain_id": -1}, "chain_id", "between 1"),
        ({"request_id": "-x"}, "request_id", "request ids"),
        ({"wallet": "Hot 1"}, "wallet", "id"),
        ({"memo": "hi"}, "memo", "unknown field"),
    ],
)
def test_bad_intents(changes: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(IntentSchemaError) as info:
        parse_intent(intent_obj(**changes), source="req.yaml")
    assert info.value.path == path and reason in info.value.reason, str(info.value)
    assert isinstance(info.value, PolicySchemaError)


def test_intent_missing_field_and_bad_file(tmp_path: Path) -> None:
    obj = intent_obj()
    del obj["initiator"]
    with pytest.raises(IntentSchemaError) as info:
        parse_intent(obj)
    assert info.value.path == "initiator"
    target = tmp_path / "req.json"
    target.write_text("[1]")
    with pytest.raises(IntentSchemaError, match="mapping"):
        load_intent(target)


def test_intent_is_immutable() -> None:
    intent = parse_intent(intent_obj())
    with pytest.raises(ValidationError):
        intent.amount = Decimal(100)  # type: ignore[misc]
    assert isinstance(intent, TransactionIntent)


# --- sanctions import --------------------------------------------------------------------------


def test_sanctions_csv_and_json_import_the_same_entries() -> None:
    from_csv = load_sanctions(FIXTURES / "sanctions.csv", default_label="list")
    from_json = load_sanctions(FIXTURES / "sanctions.json", default_label="list")
    assert [(e.address, e.chain_id) for e in from_csv] == [
        (e.address, e.chain_id) for e in from_json
    ]
    # Single-case addresses are written in their checksummed form.
    assert from_csv[0].address == "0x61371bed4a6b90951F9f3F5673a2D5C393E2Fb20"
    assert from_csv[1].address == ADDR_RANDOM and from_csv[1].chain_id == 1
    assert from_csv[0].chain_id is None and from_csv[2].label == "list"


def test_sanctions_default_label_names_the_file() -> None:
    entries = load_sanctions(FIXTURES / "sanctions.csv")
    assert entries[2].label == "sanctions list sanctions.csv"


def test_sanctions_duplicates_are_kept_once() -> None:
    text = f"address\n{ADDR_RANDOM}\n{ADDR_RANDOM.lower()}\n"
    assert len(parse_sanctions_csv(text)) == 1


def test_sanctions_bad_lines_are_each_reported() -> None:
    text = (
        "# comment\n"
        "address,chain_id,label\n"
        f"{ADDR_RANDOM},1,ok\n"
        "0x1234,1,short\n"
        f"{ADDR_A.replace('dDd', 'ddD')},,typo\n"
        f"{ADDR_A},x,bad chain\n"
        f"{ADDR_A},1\n"
    )
    with pytest.raises(SanctionsImportError) as info:
        parse_sanctions_csv(text, source="list.csv")
    error = info.value
    assert error.line == 4 and error.value == "0x1234" and "20-byte" in error.reason
    assert str(error).startswith("list.csv, line 4: ")
    assert [(line, reason.split(" ")[0]) for line, _v, reason in error.problems] == [
        (4, "not"),
        (5, "EIP-55"),
        (6, "chain_id"),
        (7, "2"),
    ]


def test_sanctions_csv_needs_an_address_column() -> None:
    with pytest.raises(SanctionsImportError, match="'address' column"):
        parse_sanctions_csv("wallet,chain\n0x00,1\n")
    with pytest.raises(SanctionsImportError, match="empty"):
        parse_sanctions_csv("# nothing\n\n")


def test_sanctions_json_errors_name_the_line() -> None:
    text = json.dumps(
        {"entries": [ADDR_RANDOM, {"address": ADDR_A, "sdn": 1}, 7, {"address": "0xzz"}]},
        indent=1,
    )
    with pytest.raises(SanctionsImportError) as info:
        parse_sanctions_json(text, source="list.json")
    problems = info.value.problems
    assert [reason for _l, _v, reason in problems] == [
        "unknown fields in a sanctions entry",
        "an entry is an address or an object",
        "not a 20-byte hex address (0x followed by 40 hex digits)",
    ]
    lines = [line for line, _v, _r in problems]
    assert lines == sorted(lines) and lines[0] > 2
    with pytest.raises(SanctionsImportError, match="expected a list"):
        parse_sanctions_json('{"addresses": []}')
    with pytest.raises(SanctionsImportError, match="JSON syntax error"):
        parse_sanctions_json("[")


def test_sanctions_into_the_next_policy_version() -> None:
    policy = load_policy(EXAMPLE)
    entries = load_sanctions(FIXTURES / "sanctions.csv")
    obj, added = next_version_with_blacklist(policy, entries)
    # The first entry (every chain) is already blacklisted by the example.
    assert added == 2
    successor = parse_policy(obj)
    assert successor.version == 2 and successor.previous == policy.policy_hash()
    assert successor.blacklist_hits(ADDR_RANDOM, 1)
    assert not successor.blacklist_hits(ADDR_RANDOM, 137)
    # Importing again adds nothing.
    again, added_again = next_version_with_blacklist(successor, entries)
    assert added_again == 0 and len(again["blacklist"]) == len(successor.blacklist)


def test_policy_document_model_config_is_strict() -> None:
    assert PolicyDocument.model_config.get("frozen") is True
    assert PolicyDocument.model_config.get("extra") == "forbid"


# --- fuzzing the decoders ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=300))
def test_any_text_is_parsed_or_refused_cleanly(text: str) -> None:
    for as_json in (True, False):
        try:
            parse_structured_text(text, source="fuzz", as_json=as_json)
        except PolicySchemaError as exc:
            assert exc.source == "fuzz"


def _splice(base: Any, path: list[Any], value: Any) -> Any:
    target = base
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return base


SPLICE_POINTS = [
    ["version"],
    ["officers", 0],
    ["governance"],
    ["groups", "treasury"],
    ["assets", "ETH"],
    ["wallets", 0, "chains"],
    ["whitelists", "exchanges", 1],
    ["blacklist", 0, "chain_id"],
    ["rules", 0, "match"],
    ["rules", 2, "approvals"],
    ["velocity_limits", 0, "max_amount"],
]


@settings(deadline=None, max_examples=300)
@given(st.sampled_from(SPLICE_POINTS), json_values)
def test_any_value_anywhere_is_accepted_or_a_schema_error(path: list[Any], value: Any) -> None:
    try:
        parse_policy(_splice(raw(), path, value))
    except PolicySchemaError as exc:
        assert exc.problems and exc.path


@settings(deadline=None, max_examples=200)
@given(st.dictionaries(st.sampled_from(sorted(intent_obj())), json_values, max_size=7))
def test_any_intent_object_is_accepted_or_an_intent_error(changes: dict[str, Any]) -> None:
    try:
        parse_intent(intent_obj(**changes))
    except IntentSchemaError as exc:
        assert exc.path


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: !!set {x, y}\n", "set is not a JSON value"),
        ("a: !!binary aGVsbG8=\n", "bytes is not a JSON value"),
        ("a: !!timestamp 2026-01-01\n", "date is not a JSON value"),
        ("? [a]\n: 1\n", "mapping keys must be plain scalars"),
        ("1: x\n", "keys must be strings"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_yaml_beyond_json_is_refused(text: str, reason: str) -> None:
    with pytest.raises(PolicySchemaError, match=reason):
        parse_structured_text(text, source="x.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        '{"a": ' * 50_000,
        "a: it's\nb: " + "[" * 100_000,  # an apostrophe must not hide the brackets after it
        "a: " + "{b: " * 50_000,
    ],
)
def test_deep_nesting_is_refused_before_parsing_even_with_a_raised_recursion_limit(
    text: str,
) -> None:
    """py-evm and py_ecc raise the recursion limit to 100 000 when imported (the coordinator
    loads them); the C JSON decoder then overflows the C stack on "[[[[…" instead of raising
    RecursionError.  The nesting check runs before any parser."""
    import sys

    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        with pytest.raises(PolicySchemaError, match="nested too deeply"):
            parse_structured_text(text, source="deep")
    finally:
        sys.setrecursionlimit(saved)


def test_ordinary_nesting_and_brackets_in_json_strings_are_fine() -> None:
    assert parse_structured_text('{"a": "' + "[" * 200 + '"}', source="s") == {"a": "[" * 200}
    nested: object = 1
    for _ in range(MAX_NESTING - 1):
        nested = [nested]
    import json

    assert parse_structured_text(json.dumps(nested), source="s") == nested
