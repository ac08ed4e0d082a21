"""`TokenSession`: the process's one logged-in PKCS#11 session on a token, and its recovery.

Every call runs under `hsm.runtime.PKCS11_LOCK` (see that module for why).  If the session dies
(token unplugged, another component logged the process out), the failing call logs in again
once — re-reading the PIN from its source — lets the owner re-find its keys (`on_relogin`) and
retries; if that fails it raises `HsmSessionLost` and the node must stop signing.  PKCS#11
exceptions never escape: they become `HsmOperationError` (or what `translate` maps them to).
Each call is timed into `HsmMetrics` (operation name only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import (
    DeviceRemoved,
    KeyHandleInvalid,
    ObjectHandleInvalid,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    UserAlreadyLoggedIn,
    UserNotLoggedIn,
    UserPinNotInitialized,
)

from hsm import runtime
from hsm.config import HsmConfig
from hsm.errors import (
    HsmError,
    HsmLoginError,
    HsmOperationError,
    HsmSessionLost,
    KeyPolicyViolation,
    KeyStoreClosed,
    TokenNotFound,
)
from hsm.metrics import HsmMetrics

if TYPE_CHECKING:
    from pkcs11.types import Object, Session, Token

log = logging.getLogger("tessera.hsm")

T = TypeVar("T")

# Errors after which the session (or the handles it gave out) can no longer be used.
SESSION_LOST: tuple[type[PKCS11Error], ...] = (
    DeviceRemoved,
    KeyHandleInvalid,
    ObjectHandleInvalid,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    UserNotLoggedIn,
)


def login(token: Token, pin: str, label: str) -> Session:
    """Open the process's one read-write session and log the user in.  Caller holds the lock.
    The PIN is never part of an error (nor of a log record)."""
    try:
        return token.open(rw=True, user_pin=pin)
    except PinIncorrect:
        raise HsmLoginError(label, "the token rejected the PIN (incorrect PIN)") from None
    except (PinInvalid, PinLenRange):
        raise HsmLoginError(label, "the PIN has a form this token does not accept") from None
    except PinLocked:
        raise HsmLoginError(
            label, "the user PIN is locked after failed attempts; the SO must reset it"
        ) from None
    except PinExpired:
        raise HsmLoginError(label, "the user PIN has expired; set a new one") from None
    except UserPinNotInitialized:
        raise HsmLoginError(
            label, "the token has no user PIN yet (initialise it with `tessera hsm init`)"
        ) from None
    except UserAlreadyLoggedIn:
        raise HsmLoginError(
            label, "this process is already logged in to the token outside this KeyStore"
        ) from None
    except (DeviceRemoved, TokenNotPresent) as exc:
        raise TokenNotFound(
            label, f"the token went away during login ({type(exc).__name__})"
        ) from None
    except PKCS11Error as exc:
        raise HsmLoginError(label, f"C_OpenSession/C_Login failed: {type(exc).__name__}") from None


class TokenSession:
    """One logged-in session on the token `config` names.  Thread safe (calls serialised)."""

    def __init__(
        self, config: HsmConfig, token: Token, session: Session, metrics: HsmMetrics
    ) -> None:
        """Use `TokenSession.open`; this only wires an already logged-in session."""
        self.config = config
        self.token = token
        self.session = session
        self.metrics = metrics
        self.closed = False
        #: Called (under the lock) after a re-login, to re-find and re-check the owner's keys.
        self.on_relogin: Callable[[], None] | None = None

    @classmethod
    def open(cls, config: HsmConfig, metrics: HsmMetrics) -> TokenSession:
        """Load the module, find the token by label and log in.

        Raises `HsmModuleError` (module missing or unusable), `TokenNotFound`, `HsmConfigError`
        (PIN source missing or unsafe) or `HsmLoginError` (PIN rejected).
        """
        with metrics.timed("login"), runtime.PKCS11_LOCK:
            token = runtime.attach(config)
            try:
                session = login(token, config.read_pin(), config.token_label)
            except BaseException:
                runtime.release(config.token_label)
                raise
        log.info("logged in to token %r", config.token_label)
        return cls(config, token, session, metrics)

    @property
    def label(self) -> str:
        return self.config.token_label

    def close(self) -> bool:
        """Log out and close the session; False if it was already closed."""
        with runtime.PKCS11_LOCK:
            if self.closed:
                return False
            self.closed = True
            try:
                self.session.close()
            except PKCS11Error as exc:  # the session is being dropped either way
                log.warning("closing token %r: %s", self.label, type(exc).__name__)
            finally:
                runtime.release(self.label)
            return True

    def run(
        self,
        operation: str,
        fn: Callable[[], T],
        translate: Callable[[PKCS11Error], HsmError | None] | None = None,
    ) -> T:
        """Run `fn` under the lock; recover a lost session once; map PKCS#11 errors to ours."""
        with self.metrics.timed(operation), runtime.PKCS11_LOCK:
            if self.closed:
                raise KeyStoreClosed(self.label, operation)
            try:
                try:
                    return fn()
                except SESSION_LOST as lost:
                    log.warning(
                        "token %r: %s during %s; logging in again",
                        self.label,
                        type(lost).__name__,
                        operation,
                    )
                    self._reconnect(operation, lost)
                try:
                    return fn()
                except SESSION_LOST as lost:
                    raise HsmSessionLost(
                        self.label, operation, f"{type(lost).__name__} again after re-login"
                    ) from None
            except PKCS11Error as exc:
                mapped = translate(exc) if translate is not None else None
                if mapped is not None:
                    raise mapped from None
                detail = str(exc) or type(exc).__name__
                raise HsmOperationError(self.label, operation, detail) from None

    def _reconnect(self, operation: str, cause: PKCS11Error) -> None:
        try:
            self.session.close()
        except PKCS11Error:  # already dead; we only want the logout side effect if any
            log.debug("token %r: closing the lost session failed", self.label)
        try:
            token = runtime.find_token(
                self.config.module_path, self.config.softhsm_conf, self.label
            )
            self.session = login(token, self.config.read_pin(), self.label)
            self.token = token
            if self.on_relogin is not None:
                self.on_relogin()
        except (HsmError, PKCS11Error) as exc:
            raise HsmSessionLost(
                self.label, operation, f"{type(cause).__name__}; logging in again failed: {exc}"
            ) from None

    def find_one(self, object_class: ObjectClass, label: str) -> Object | None:
        """The one object of `object_class` with `label` (None if absent); two are refused — a
        planted duplicate must not decide which key the node uses.  Caller holds the lock."""
        found = list(
            self.session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label})
        )
        if len(found) > 1:
            raise KeyPolicyViolation(
                self.label, label, f"{len(found)} {object_class.name} objects carry this label"
            )
        return found[0] if found else None
