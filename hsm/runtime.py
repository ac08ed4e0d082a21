"""The process-wide PKCS#11 runtime: one loaded module, one lock, a registry of open tokens.

Why one lock: python-pkcs11 calls ``C_Initialize(NULL)``, after which SoftHSM2 switches its own
mutexes off, and python-pkcs11 releases the GIL during every call.  Unserialised calls from several
threads crash the process and leave half-written objects in the token (research/hsm.md §6).  So
*every* PKCS#11 call in this package — attribute reads and object searches included — runs while
holding `PKCS11_LOCK`.

Why a registry: PKCS#11 login state belongs to the process, not to a session (a second login
raises ``UserAlreadyLoggedIn``; closing any session logs all out), and SoftHSM2 reads
``SOFTHSM2_CONF`` only in ``C_Initialize``.  The registry therefore allows one `KeyStore` per
token label, and re-initialises the module (to pick up another configuration or a token created
after start-up) only while no token is open in this process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
from pkcs11 import TokenFlag
from pkcs11.exceptions import GeneralError, NoSuchToken, PKCS11Error

from hsm.config import HsmConfig
from hsm.errors import HsmConfigError, HsmModuleError, TokenNotFound

if TYPE_CHECKING:
    from pkcs11 import _pkcs11
    from pkcs11.types import Token

log = logging.getLogger("tessera.hsm")

# Re-entrant so that a helper called under the lock can take it again.
PKCS11_LOCK = threading.RLock()

SOFTHSM2_CONF_ENV = "SOFTHSM2_CONF"
# Start-up race (research/hsm.md §6): a process initialising while another logs in can see the
# token as missing until it re-initialises; three retries sufficed in 80 of 80 measured starts.
TOKEN_LOOKUP_ATTEMPTS = 6
TOKEN_LOOKUP_BACKOFF_S = 0.02


@dataclass
class _State:
    lib: _pkcs11.lib | None = None
    module: str | None = None  # resolved path of the loaded module
    conf: str | None = None  # SOFTHSM2_CONF at the last C_Initialize
    open_labels: set[str] = field(default_factory=set)


_STATE = _State()


def _desired_conf(config_conf: Path | None) -> str | None:
    if config_conf is None:
        return os.environ.get(SOFTHSM2_CONF_ENV)
    if not config_conf.is_file():
        raise HsmConfigError("softhsm_conf", f"{config_conf} does not exist or is not a file")
    return str(config_conf.resolve())


def _apply_conf(conf: str | None) -> None:
    if conf is None:
        os.environ.pop(SOFTHSM2_CONF_ENV, None)
    else:
        os.environ[SOFTHSM2_CONF_ENV] = conf


def _init_failure(module: str, conf: str | None, exc: PKCS11Error) -> HsmModuleError:
    detail = str(exc) or type(exc).__name__
    where = f"SOFTHSM2_CONF={conf}" if conf is not None else "SOFTHSM2_CONF unset"
    return HsmModuleError(
        module,
        f"C_Initialize failed ({detail}); for SoftHSM2 check the configuration file ({where}) "
        "exists and its tokendir is readable by this user",
    )


def load_module(module_path: Path, softhsm_conf: Path | None) -> _pkcs11.lib:
    """The initialised module for this configuration (loading or re-initialising if allowed).

    Caller must hold `PKCS11_LOCK`.
    """
    if not module_path.is_file():
        raise HsmModuleError(
            str(module_path),
            "no such file; install SoftHSM2 (apt-get install softhsm2) or set module_path to "
            "your HSM vendor's PKCS#11 library",
        )
    module = str(module_path.resolve())
    conf = _desired_conf(softhsm_conf)
    busy = sorted(_STATE.open_labels)
    if _STATE.lib is not None and _STATE.module != module:
        if busy:
            raise HsmModuleError(
                module,
                f"this process already uses PKCS#11 module {_STATE.module} for open token(s) "
                f"{busy}; one module per process",
            )
        _finalize_quietly(_STATE.lib)
        _STATE.lib = None
    if _STATE.lib is not None and conf != _STATE.conf:
        if busy:
            raise HsmModuleError(
                module,
                f"this process initialised the module with SOFTHSM2_CONF={_STATE.conf} and has "
                f"token(s) {busy} open; it cannot switch to {conf} (SoftHSM2 reads the "
                "configuration once per C_Initialize: one node = one process = one token)",
            )
        _apply_conf(conf)
        try:
            _STATE.lib.reinitialize()
        except PKCS11Error as exc:
            _STATE.lib = None
            raise _init_failure(module, conf, exc) from exc
        _STATE.conf = conf
        log.info("PKCS#11 module re-initialised for SOFTHSM2_CONF=%s", conf)
    if _STATE.lib is None:
        _apply_conf(conf)
        try:
            lib = pkcs11.lib(module)
        except PKCS11Error as exc:
            if str(exc).startswith(("OS exception", "Unknown exception")):
                raise HsmModuleError(module, f"cannot be loaded: {exc}") from exc
            raise _init_failure(module, conf, exc) from exc
        _STATE.lib, _STATE.module, _STATE.conf = lib, module, conf
        log.info("PKCS#11 module %s loaded (SOFTHSM2_CONF=%s)", module, conf)
    return _STATE.lib


def refresh_module(module_path: Path, softhsm_conf: Path | None) -> _pkcs11.lib:
    """`load_module`, then re-initialise so the module re-reads its token list.

    Only while no token is open in this process (re-initialising ends every session).  Caller
    holds `PKCS11_LOCK`.
    """
    load_module(module_path, softhsm_conf)
    if _STATE.open_labels:
        raise HsmModuleError(
            _STATE.module or str(module_path),
            f"cannot re-initialise while token(s) {sorted(_STATE.open_labels)} are open",
        )
    return _reinitialize(_STATE.module or str(module_path))


def _finalize_quietly(lib: _pkcs11.lib) -> None:
    try:
        lib.finalize()
    except PKCS11Error as exc:  # finalising a module we are leaving; nothing depends on it
        log.warning("C_Finalize of %s failed: %s", _STATE.module, type(exc).__name__)


def _reinitialize(module: str) -> _pkcs11.lib:
    lib = _STATE.lib
    if lib is None:
        raise HsmModuleError(module, "module not loaded")
    try:
        lib.reinitialize()
    except PKCS11Error as exc:
        _STATE.lib = None
        raise _init_failure(module, _STATE.conf, exc) from exc
    return lib


def initialised_labels(lib: _pkcs11.lib) -> tuple[str, ...]:
    """Labels of the initialised tokens the module shows.  Caller holds `PKCS11_LOCK`."""
    labels: list[str] = []
    try:
        for token in lib.get_tokens():
            if token.flags & TokenFlag.TOKEN_INITIALIZED:
                labels.append(token.label)
    except PKCS11Error as exc:
        log.warning("listing tokens failed: %s", type(exc).__name__)
    return tuple(labels)


def find_token(module_path: Path, softhsm_conf: Path | None, label: str) -> Token:
    """The one initialised token labelled `label`.  Caller holds `PKCS11_LOCK`.

    Re-initialises between attempts (start-up race, tokens created after start-up) only while no
    token is open in this process; otherwise a single lookup.
    """
    lib = load_module(module_path, softhsm_conf)
    module = _STATE.module or str(module_path)
    attempts = 1 if _STATE.open_labels else TOKEN_LOOKUP_ATTEMPTS
    for attempt in range(attempts):
        try:
            found = [
                t
                for t in lib.get_tokens(token_label=label)
                if t.flags & TokenFlag.TOKEN_INITIALIZED
            ]
        except (GeneralError, NoSuchToken):
            found = []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise TokenNotFound(
                label,
                f"{len(found)} tokens carry this label; token labels must be unique",
                initialised_labels(lib),
            )
        if attempt + 1 < attempts:
            time.sleep(TOKEN_LOOKUP_BACKOFF_S * (attempt + 1))
            lib = _reinitialize(module)
    hint = ""
    if _STATE.open_labels:
        hint = (
            "; tokens created after this process initialised the module stay invisible while "
            f"token(s) {sorted(_STATE.open_labels)} are open"
        )
    conf = _STATE.conf if _STATE.conf is not None else "unset"
    raise TokenNotFound(
        label,
        f"no initialised token with this label in module {module} (SOFTHSM2_CONF={conf}){hint}",
        initialised_labels(lib),
    )


def attach(config: HsmConfig) -> Token:
    """Find the configured token and register it as open.  Caller holds `PKCS11_LOCK`.

    Pair every successful call with `release(config.token_label)`.
    """
    label = config.token_label
    # Module and configuration first: a same-named token under another configuration is
    # another token, and the error should say the configuration cannot change.
    load_module(config.module_path, config.softhsm_conf)
    if label in _STATE.open_labels:
        raise HsmModuleError(
            str(config.module_path),
            f"token {label!r} is already open in this process; PKCS#11 login is per process, "
            "so share that KeyStore instead of opening a second one",
        )
    token = find_token(config.module_path, config.softhsm_conf, label)
    _STATE.open_labels.add(label)
    return token


def release(label: str) -> None:
    """Forget that `label` is open.  Caller holds `PKCS11_LOCK`."""
    _STATE.open_labels.discard(label)


def open_labels() -> tuple[str, ...]:
    """Token labels currently open in this process (for diagnostics)."""
    with PKCS11_LOCK:
        return tuple(sorted(_STATE.open_labels))
