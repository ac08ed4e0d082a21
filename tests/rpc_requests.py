"""What a chain client asks its node: the JSON-RPC methods of every request, in order."""

from __future__ import annotations

from typing import Any

from coordinator.rpc import ChainRpc


def recorded(rpc: ChainRpc) -> list[str]:
    """The list that every request `rpc`'s first provider sends from now on is appended to
    (its method name)."""
    provider = rpc._w3[0].provider
    sent: list[str] = []
    make_request = provider.make_request

    async def recording(method: Any, params: Any) -> Any:
        sent.append(str(method))
        return await make_request(method, params)

    provider.make_request = recording  # type: ignore[method-assign]
    return sent
