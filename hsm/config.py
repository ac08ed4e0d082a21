"""Where a node finds its PKCS#11 token: module path, token label, PIN source, SoftHSM2 config.

The PIN itself is never a field: `HsmConfig` only names where to read it (an environment variable
or a file) and `read_pin()` reads it when the token is opened.  So no repr, log line or exception
built from a config can contain it.

`softhsm_conf` sets ``SOFTHSM2_CONF`` for the whole process before the module is initialised;
SoftHSM2 reads it only in ``C_Initialize``, so one process uses one SoftHSM2 configuration at a
time (one node = one process = one token).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hsm.errors import HsmConfigError

# Where distributions put SoftHSM2's module; the first that exists is the default.
MODULE_SEARCH_PATHS: tuple[Path, ...] = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib64/pkcs11/libsofthsm2.so"),
    Path("/usr/local/lib/softhsm/libsofthsm2.so"),
    Path("/opt/homebrew/lib/softhsm/libsofthsm2.so"),
)

TOKEN_LABEL_MAX_BYTES = 32  # CK_TOKEN_INFO.label is 32 bytes, blank padded
PIN_MAX_CHARS = 255
CONFIG_FILE_NAME = "tessera-hsm.json"


def default_module_path() -> Path:
    """The first SoftHSM2 module of `MODULE_SEARCH_PATHS` that exists (else the first entry, so
    that opening reports a clear "module not found" for the usual Debian path)."""
    for candidate in MODULE_SEARCH_PATHS:
        if candidate.exists():
            return candidate
    return MODULE_SEARCH_PATHS[0]


def validate_token_label(label: str, field_name: str = "token_label") -> str:
    """Check a token label fits PKCS#11's 32-byte blank-padded field and survives the padding."""
    if not isinstance(label, str) or not label:
        raise HsmConfigError(field_name, "must be a non-empty string")
    encoded = label.encode("utf-8", errors="strict")
    if len(encoded) > TOKEN_LABEL_MAX_BYTES:
        raise HsmConfigError(
            field_name, f"{label!r} is {len(encoded)} bytes; PKCS#11 allows {TOKEN_LABEL_MAX_BYTES}"
        )
    if label != label.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in label):
        raise HsmConfigError(
            field_name, f"{label!r} has leading/trailing blanks or control characters"
        )
    return label


def validate_pin(pin: str, source: str, *, min_chars: int = 1) -> str:
    """Check a PIN's shape without ever putting the PIN in the error text."""
    if not isinstance(pin, str):
        raise HsmConfigError(source, "the PIN must be text")
    if not min_chars <= len(pin) <= PIN_MAX_CHARS:
        raise HsmConfigError(
            source, f"the PIN must be {min_chars}..{PIN_MAX_CHARS} characters (got {len(pin)})"
        )
    if any(c in "\r\n\x00" for c in pin):
        raise HsmConfigError(source, "the PIN contains a line break or NUL character")
    return pin


def read_pin_file(path: Path, field_name: str = "pin_file") -> str:
    """Read a PIN file: one line, owner-only permissions (like ssh refuses a readable key)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise HsmConfigError(field_name, f"{path} does not exist") from None
    except OSError as exc:
        raise HsmConfigError(field_name, f"{path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise HsmConfigError(field_name, f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise HsmConfigError(
            field_name,
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; a PIN file must be accessible by "
            f"its owner only (chmod 600 {path})",
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HsmConfigError(field_name, f"{path} cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HsmConfigError(field_name, f"{path} is not UTF-8 text") from None
    # One trailing line break is what editors and `echo` add; anything else is part of the PIN.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return validate_pin(text, f"{field_name} {path}")


def write_pin_file(path: Path, pin: str) -> None:
    """Create a new PIN file with mode 0600; never overwrites an existing file."""
    validate_pin(pin, f"PIN for {path}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise HsmConfigError("pin_file", f"{path} already exists; not overwriting it") from None
    except OSError as exc:
        raise HsmConfigError("pin_file", f"{path} cannot be created: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask could only have narrowed it; make it exact
        os.write(fd, pin.encode("utf-8") + b"\n")
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class HsmConfig:
    """How to reach a node's token.  Exactly one of `pin_env` / `pin_file` names the PIN."""

    token_label: str
    pin_env: str | None = None
    pin_file: Path | None = None
    module_path: Path = field(default_factory=default_module_path)
    softhsm_conf: Path | None = None

    def __post_init__(self) -> None:
        validate_token_label(self.token_label)
        if (self.pin_env is None) == (self.pin_file is None):
            raise HsmConfigError(
                "pin_env/pin_file", "set exactly one PIN source (an environment variable or a file)"
            )
        if self.pin_env is not None and (
            not self.pin_env or "=" in self.pin_env or "\x00" in self.pin_env
        ):
            raise HsmConfigError("pin_env", f"{self.pin_env!r} is not an environment variable name")
        for name in ("pin_file", "module_path", "softhsm_conf"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                raise HsmConfigError(name, f"must be a pathlib.Path, got {type(value).__name__}")

    def read_pin(self) -> str:
        """Read the PIN now, from the configured source.  Called only when logging in."""
        if self.pin_env is not None:
            value = os.environ.get(self.pin_env)
            if not value:
                raise HsmConfigError("pin_env", f"environment variable {self.pin_env} is not set")
            return validate_pin(value, f"pin_env {self.pin_env}")
        if self.pin_file is None:  # unreachable after __post_init__; keeps the check explicit
            raise HsmConfigError("pin_env/pin_file", "no PIN source configured")
        return read_pin_file(self.pin_file)

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready form (no secret in it: only where the PIN is)."""
        return {
            "module_path": str(self.module_path),
            "token_label": self.token_label,
            "pin_env": self.pin_env,
            "pin_file": None if self.pin_file is None else str(self.pin_file),
            "softhsm_conf": None if self.softhsm_conf is None else str(self.softhsm_conf),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> HsmConfig:
        """Build from a mapping such as `to_dict()` output; unknown keys are an error."""
        known = {"module_path", "token_label", "pin_env", "pin_file", "softhsm_conf"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise HsmConfigError(unknown[0], f"unknown field (expected one of {sorted(known)})")

        def text(name: str, required: bool) -> str | None:
            value = doc.get(name)
            if value is None:
                if required:
                    raise HsmConfigError(name, "missing")
                return None
            if not isinstance(value, str) or not value:
                raise HsmConfigError(name, f"must be a non-empty string, got {value!r}")
            return value

        label = text("token_label", True)
        if label is None:  # text() raised already; keeps mypy's narrowing explicit
            raise HsmConfigError("token_label", "missing")
        pin_env = text("pin_env", False)
        pin_file = text("pin_file", False)
        module = text("module_path", False)
        conf = text("softhsm_conf", False)
        return cls(
            token_label=label,
            pin_env=pin_env,
            pin_file=None if pin_file is None else Path(pin_file),
            module_path=default_module_path() if module is None else Path(module),
            softhsm_conf=None if conf is None else Path(conf),
        )

    def save(self, path: Path) -> None:
        """Write `to_dict()` as JSON (atomically: a temporary file renamed over `path`)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> HsmConfig:
        """Read a config written by `save()` (e.g. ``DIR/tessera-hsm.json`` from `hsm init`)."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HsmConfigError("config", f"{path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HsmConfigError("config", f"{path} is not readable JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise HsmConfigError("config", f"{path} must hold a JSON object")
        return cls.from_dict(doc)
