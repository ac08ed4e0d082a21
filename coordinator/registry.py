"""The chain registry: the EVM chains the coordinator builds, sends and follows transactions on.

One TOML file (docs/chains.md, "The chain registry") lists each chain by its chain id: a name,
its native coin and decimals, the JSON-RPC URLs to use in order, the confirmations a payout or a
deposit needs, the fee model (EIP-1559 or legacy gas price), the fee ceiling above which nothing
is signed, and its ERC-20 tokens by symbol with contract address and decimals.
`coordinator/mainnets.toml` ships Ethereum, Polygon PoS, BNB Smart Chain, Arbitrum One and Base
as the example to start from.

The registry is the coordinator's configuration, not a trust anchor: what a node signs is decided
by the officers' policy on the node (its assets, chains and whitelists), so a wrong registry can
only make a node refuse.  It is still checked strictly, because a mistyped contract address would
pay to the wrong place: addresses must carry their EIP-55 checksum, amounts of gas are integers
in wei (no floats anywhere), and a chain id, name, token symbol or contract appears once.
A file that fails gets one `RegistryError` naming every field that is wrong and why, never the
values it holds.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from policies.document import Address, AssetSymbol, ChainId, Decimals
from signer.errors import TesseraError
from signer.problems import ErrorCode

#: The registry shipped with Tessera: real mainnets, to copy and point at your own RPC nodes.
MAINNETS: Final = Path(__file__).with_name("mainnets.toml")

#: More than this many confirmations is a typo, not a policy (a day of Ethereum blocks is 7,200).
MAX_CONFIRMATIONS: Final = 100_000
#: Per-gas fee ceilings are in wei; 10^15 wei (a million gwei) per gas is beyond any real fee.
MAX_FEE_CEILING_WEI: Final = 10**15

_Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
_RpcUrl = Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")]


class RegistryError(TesseraError):
    """A registry file that cannot be read or does not validate: `problems` lists each wrong
    field as "where: why" (never the value written there)."""

    code = ErrorCode.VALIDATION

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class NativeCoin(_Model):
    symbol: AssetSymbol
    decimals: Decimals


class Token(_Model):
    """An ERC-20 contract on one chain: `transfer(address,uint256)` amounts are in units of
    10^-decimals of the token."""

    address: Address
    decimals: Decimals


class Chain(_Model):
    chain_id: ChainId
    name: _Name
    native: NativeCoin
    rpc_urls: Annotated[list[_RpcUrl], Field(min_length=1, max_length=16)]
    confirmations: Annotated[StrictInt, Field(ge=0, le=MAX_CONFIRMATIONS)]
    fee_model: Literal["eip1559", "legacy"]
    #: The most this chain may ever be paid per gas, in wei (EIP-1559: max fee per gas; legacy:
    #: gas price): a transaction whose fee would be higher is refused, not signed.
    fee_ceiling_wei: Annotated[StrictInt, Field(gt=0, le=MAX_FEE_CEILING_WEI)]
    tokens: dict[AssetSymbol, Token] = Field(default_factory=dict)
    #: The batch-payout contract (coordinator/contracts/Disperse.sol) deployed on this chain;
    #: None: batches are paid one transaction per withdrawal.  The nodes sign a batch only
    #: through the contract their policy names for the chain, so the two must agree.
    disperse: Address | None = None

    @model_validator(mode="after")
    def _distinct(self) -> Chain:
        if self.native.symbol in self.tokens:
            raise ValueError(f"token {self.native.symbol} has the native coin's symbol")
        if self.disperse is not None and self.token_at(self.disperse) is not None:
            raise ValueError("the disperse contract is a token's contract address")
        seen: dict[str, str] = {}
        for symbol, token in self.tokens.items():
            other = seen.setdefault(token.address.lower(), symbol)
            if other != symbol:
                raise ValueError(f"tokens {other} and {symbol} have the same contract address")
        return self

    def token(self, symbol: str) -> Token | None:
        return self.tokens.get(symbol)

    def token_at(self, address: str) -> tuple[str, Token] | None:
        """The token whose contract is `address` (any letter case), if one is registered."""
        wanted = address.lower()
        for symbol, token in self.tokens.items():
            if token.address.lower() == wanted:
                return symbol, token
        return None


class ChainRegistry(_Model):
    chains: Annotated[list[Chain], Field(min_length=1, max_length=256)]

    @model_validator(mode="after")
    def _unique(self) -> ChainRegistry:
        for what, keys in (
            ("chain id", [str(c.chain_id) for c in self.chains]),
            ("chain name", [c.name.casefold() for c in self.chains]),
        ):
            repeated = sorted({k for k in keys if keys.count(k) > 1})
            if repeated:
                raise ValueError(f"{what} {', '.join(repeated)} appears more than once")
        return self

    def chain(self, chain_id: int) -> Chain:
        for chain in self.chains:
            if chain.chain_id == chain_id:
                return chain
        known = ", ".join(str(c.chain_id) for c in self.chains)
        raise RegistryError("chain registry", [f"no chain {chain_id} (known: {known})"])

    def chain_ids(self) -> tuple[int, ...]:
        return tuple(c.chain_id for c in self.chains)


def _where(location: tuple[int | str, ...]) -> str:
    """A pydantic error location in the file's own terms: chains[2].tokens.USDT.address."""
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "registry"


def parse_registry(document: object, source: str = "chain registry") -> ChainRegistry:
    """A validated registry from parsed TOML/JSON data; `RegistryError` lists what is wrong."""
    try:
        return ChainRegistry.model_validate(document)
    except ValidationError as exc:
        # Location and reason only: pydantic's own text quotes the input, and a registry
        # problem must not echo what a file holds.
        problems = [
            f"{_where(error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors(include_input=False, include_url=False)
        ]
        raise RegistryError(source, problems) from None


def local_registry(
    chain_id: int,
    name: str,
    rpc_url: str,
    tokens: Mapping[str, tuple[str, int]],
    *,
    confirmations: int = 1,
    fee_ceiling_wei: int = 1_000 * 10**9,
    disperse: str | None = None,
) -> ChainRegistry:
    """A registry of one local EIP-1559 chain with ETH as its coin and `tokens` (symbol →
    (address, decimals)), and its disperse contract if one is deployed: the demo's and the
    benchmarks' (validated as any file is)."""
    entry: dict[str, object] = {
        "chain_id": chain_id,
        "name": name,
        "native": {"symbol": "ETH", "decimals": 18},
        "rpc_urls": [rpc_url],
        "confirmations": confirmations,
        "fee_model": "eip1559",
        "fee_ceiling_wei": fee_ceiling_wei,
        "tokens": {s: {"address": a, "decimals": d} for s, (a, d) in tokens.items()},
    }
    if disperse is not None:
        entry["disperse"] = disperse
    return parse_registry({"chains": [entry]}, name)


def load_registry(path: Path = MAINNETS) -> ChainRegistry:
    """The registry in the TOML file `path` (default: the shipped mainnets)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise RegistryError(str(path), [f"cannot be read ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise RegistryError(str(path), ["is not UTF-8 text"]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib names the line and column, not the text there.
        raise RegistryError(str(path), [f"is not TOML ({exc})"]) from None
    return parse_registry(document, str(path))


def registry_toml(registry: ChainRegistry) -> str:
    """`registry` as the TOML file `load_registry` reads back to an equal registry: what the
    demo hands to `tessera serve --registry` for its local chain."""

    def text(value: str) -> str:
        # a JSON string of validated text is a TOML basic string (same escapes)
        return json.dumps(value)

    blocks = []
    for chain in registry.chains:
        lines = [
            "[[chains]]",
            f"chain_id = {chain.chain_id}",
            f"name = {text(chain.name)}",
            f"native = {{ symbol = {text(chain.native.symbol)}, "
            f"decimals = {chain.native.decimals} }}",
            "rpc_urls = [" + ", ".join(text(u) for u in chain.rpc_urls) + "]",
            f"confirmations = {chain.confirmations}",
            f"fee_model = {text(chain.fee_model)}",
            f"fee_ceiling_wei = {chain.fee_ceiling_wei}",
        ]
        if chain.disperse is not None:
            lines.append(f"disperse = {text(chain.disperse)}")
        tokens = ", ".join(
            f"{symbol} = {{ address = {text(t.address)}, decimals = {t.decimals} }}"
            for symbol, t in chain.tokens.items()
        )
        lines.append(f"tokens = {{ {tokens} }}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
