"""SoftHSM2 token set-up for development, tests and single-host deployments.

`init_token(directory, label, pin, so_pin, …)` gives a node a token directory of its own::

    DIR/                 mode 0700
      softhsm2.conf      SoftHSM2 configuration whose tokendir is DIR/tokens
      tokens/<uuid>/     the token (SoftHSM2 stores private objects encrypted under the PIN)

and returns the `HsmConfig` to open it with.  The real PINs never appear on a command line
(``/proc/*/cmdline``, audit logs): ``softhsm2-util --init-token`` is given random one-time PINs,
which are replaced at once through PKCS#11 (``C_InitPIN`` as SO, then ``C_SetPIN``).  If any step
fails the new token is deleted again, so a failed init leaves nothing half made.

This loads the PKCS#11 module in the calling process with the directory's configuration, so it
must run while this process has no `KeyStore` open on another configuration (the CLI and tests
create tokens before opening them).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from pkcs11.exceptions import PKCS11Error

from hsm import runtime
from hsm.config import (
    CONFIG_FILE_NAME,
    HsmConfig,
    default_module_path,
    validate_pin,
    validate_token_label,
)
from hsm.errors import HsmConfigError, HsmError, TokenInitError

log = logging.getLogger("tessera.hsm")

SOFTHSM2_UTIL = "softhsm2-util"
CONF_NAME = "softhsm2.conf"
TOKENS_DIR_NAME = "tokens"
SOFTHSM_PIN_MIN = 4  # SoftHSM2 accepts PINs of 4..255 characters
UTIL_TIMEOUT_S = 60


def softhsm_conf_text(token_dir: Path) -> str:
    """A SoftHSM2 configuration keeping tokens as files in `token_dir`."""
    return (
        "# Written by `tessera hsm init`: this node's own SoftHSM2 token directory.\n"
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
        "slots.mechanisms = ALL\n"
        "library.reset_on_fork = false\n"
    )


def _util_path() -> str:
    found = shutil.which(SOFTHSM2_UTIL)
    if found is None:
        raise TokenInitError(
            SOFTHSM2_UTIL, "not on PATH; install SoftHSM2 (apt-get install softhsm2)"
        )
    return found


def _run_util(directory: Path, conf: Path, args: list[str]) -> None:
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    try:
        done = subprocess.run(  # noqa: S603  (fixed executable, arguments we built)
            [_util_path(), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=UTIL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TokenInitError(str(directory), f"{SOFTHSM2_UTIL} {args[0]} failed: {exc}") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().replace("\n", " / ")
        raise TokenInitError(
            str(directory), f"{SOFTHSM2_UTIL} {args[0]} exited {done.returncode}: {message}"
        )


def _prepare_directory(directory: Path, allow_existing: bool) -> tuple[Path, Path]:
    """Create DIR (0700), DIR/tokens (0700) and DIR/softhsm2.conf; return (conf, tokendir)."""
    if any(c in str(directory) for c in "\n\r\x00"):
        raise TokenInitError(repr(str(directory)), "the path contains a line break or NUL")
    conf = directory / CONF_NAME
    tokens = directory / TOKENS_DIR_NAME
    if directory.exists() and not directory.is_dir():
        raise TokenInitError(str(directory), "exists and is not a directory")
    in_use = conf.exists() or (tokens.is_dir() and any(tokens.iterdir()))
    if in_use and not allow_existing:
        raise TokenInitError(
            str(directory),
            "already holds a SoftHSM2 token directory; each node gets a new, empty directory "
            "(an existing token is never re-initialised, that would destroy its keys)",
        )
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tokens.mkdir(mode=0o700, exist_ok=True)
        if not conf.exists():
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(softhsm_conf_text(tokens.resolve()))
    except OSError as exc:
        raise TokenInitError(str(directory), f"cannot create it: {exc.strerror}") from None
    expected = f"directories.tokendir = {tokens.resolve()}"
    if expected not in conf.read_text(encoding="utf-8").splitlines():
        raise TokenInitError(str(conf), f"exists but does not say {expected!r}")
    return conf.resolve(), tokens.resolve()


def init_token(
    directory: Path,
    label: str,
    pin: str,
    so_pin: str,
    *,
    pin_file: Path | None = None,
    pin_env: str | None = None,
    module_path: Path | None = None,
    allow_existing: bool = False,
) -> HsmConfig:
    """Create a SoftHSM2 token labelled `label` in `directory`; return the config to open it.

    `pin_file` / `pin_env` (exactly one) say where the node will read the user PIN later; this
    function does not write the PIN anywhere.  With `allow_existing` the directory may already
    hold tokens (several nodes in one test process share one SoftHSM2 configuration), but the
    label must still be new.
    """
    validate_token_label(label, "label")
    validate_pin(pin, "user PIN", min_chars=SOFTHSM_PIN_MIN)
    validate_pin(so_pin, "SO PIN", min_chars=SOFTHSM_PIN_MIN)
    module = module_path if module_path is not None else default_module_path()
    # Built (and so validated) before anything touches the disk.
    config = HsmConfig(
        token_label=label,
        pin_env=pin_env,
        pin_file=None if pin_file is None else pin_file.resolve(),
        module_path=module,
    )
    conf, _tokens = _prepare_directory(directory.resolve(), allow_existing)
    config = replace(config, softhsm_conf=conf)
    with runtime.PKCS11_LOCK:
        if runtime.open_labels():
            raise TokenInitError(
                str(directory),
                f"this process has token(s) {list(runtime.open_labels())} open; create tokens "
                "before opening any (SoftHSM2 shows new tokens only after re-initialising)",
            )
        lib = runtime.refresh_module(module, conf)
        if label in runtime.initialised_labels(lib):
            raise TokenInitError(str(directory), f"a token labelled {label!r} already exists")
        one_time_so = secrets.token_hex(16)
        one_time_user = secrets.token_hex(16)
        _run_util(
            directory,
            conf,
            [
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                one_time_so,
                "--pin",
                one_time_user,
            ],
        )
        try:
            runtime.refresh_module(module, conf)  # SoftHSM2 lists new tokens after C_Initialize
            _set_real_pins(config, one_time_so, pin, so_pin)
        except (HsmError, PKCS11Error) as exc:
            _delete_token(directory, conf, label)
            if isinstance(exc, HsmError):
                raise
            raise TokenInitError(
                str(directory), f"setting the PINs failed ({type(exc).__name__}); token removed"
            ) from None
    log.info("created SoftHSM2 token %r in %s", label, directory)
    return config


def _set_real_pins(config: HsmConfig, one_time_so: str, pin: str, so_pin: str) -> None:
    """Replace the one-time PINs through PKCS#11 and prove the user PIN logs in.

    Caller holds `PKCS11_LOCK` and has no token open (so the module may re-initialise).
    """
    token = runtime.find_token(config.module_path, config.softhsm_conf, config.token_label)
    so_session = token.open(rw=True, so_pin=one_time_so)
    try:
        so_session.init_pin(pin)
        so_session.set_pin(one_time_so, so_pin)
    finally:
        so_session.close()
    user_session = token.open(rw=True, user_pin=pin)
    user_session.close()


def _delete_token(directory: Path, conf: Path, label: str) -> None:
    try:
        _run_util(directory, conf, ["--delete-token", "--token", label])
    except TokenInitError as exc:
        log.error("could not delete the half-made token %r: %s", label, exc)


def read_config_dir(directory: Path) -> HsmConfig:
    """The `HsmConfig` that `tessera hsm init` saved in `directory`."""
    path = directory / CONFIG_FILE_NAME
    if not path.exists():
        raise HsmConfigError(
            "config", f"{path} does not exist; was this directory made by `tessera hsm init`?"
        )
    return HsmConfig.load(path)
