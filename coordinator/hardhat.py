"""A local Hardhat 2 node: a real JSON-RPC Ethereum node for tests, benchmarks and the demo.

`HardhatNode(chain_id)` starts `hardhat node` from `coordinator/localchain` (installed there by
`./run`, `npm ci`), bound to 127.0.0.1 on a free port, with its chain id from the environment
(`hardhat.config.js`), and waits until it answers `eth_chainId`.  Two nodes with different chain
ids stand for two chains.  It mines a block per transaction; `LocalChain.request` reaches its
`evm_*` methods (snapshots for reorgs, `evm_setAutomine`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Final

from coordinator.ports import free_port

LOCALCHAIN: Final = Path(__file__).resolve().parent / "localchain"
HARDHAT: Final = LOCALCHAIN / "node_modules" / ".bin" / "hardhat"
START_TIMEOUT: Final = 60.0


class HardhatUnavailable(RuntimeError):
    """Hardhat is not installed, or the node did not come up."""


class HardhatNode:
    def __init__(self, chain_id: int = 31337, *, port: int | None = None) -> None:
        self.chain_id = chain_id
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path | None = None) -> HardhatNode:
        if not HARDHAT.exists():
            raise HardhatUnavailable(f"Hardhat is not installed: npm ci --prefix {LOCALCHAIN}")
        env = {
            **os.environ,
            "TESSERA_CHAIN_ID": str(self.chain_id),
            "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
        }
        self._log = log
        out = log.open("ab") if log is not None else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(  # noqa: S603 - a fixed command of our own install
                [str(HARDHAT), "node", "--hostname", "127.0.0.1", "--port", str(self.port)],
                cwd=LOCALCHAIN,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None and not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise HardhatUnavailable(f"hardhat node exited with {self._process.returncode}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise HardhatUnavailable(f"hardhat node did not answer within {START_TIMEOUT} s")

    def _answers(self) -> bool:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            self.url, body.encode(), {"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1.0) as response:  # noqa: S310
                return int(json.loads(response.read())["result"], 16) == self.chain_id
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> HardhatNode:
        return self.start() if self._process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
