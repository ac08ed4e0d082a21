"""HsmConfig and PIN sources: validation, PIN files, and that the PIN never shows."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hsm.config import (
    CONFIG_FILE_NAME,
    MODULE_SEARCH_PATHS,
    HsmConfig,
    default_module_path,
    read_pin_file,
    write_pin_file,
)
from hsm.errors import HsmConfigError

PIN = "Marker-PIN-4e7d91"


def pin_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "pin"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_pin_file_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "node.pin"
    write_pin_file(path, PIN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_pin_file(path) == PIN
    config = HsmConfig(token_label="node-1", pin_file=path)
    assert config.read_pin() == PIN


def test_write_pin_file_never_overwrites(tmp_path: Path) -> None:
    path = pin_file(tmp_path, b"old-pin\n")
    with pytest.raises(HsmConfigError) as info:
        write_pin_file(path, PIN)
    assert info.value.field == "pin_file"
    assert path.read_bytes() == b"old-pin\n"


@pytest.mark.parametrize(
    ("content", "pin"),
    [(b"abcd\n", "abcd"), (b"abcd\r\n", "abcd"), (b"abcd", "abcd"), (b" a b \n", " a b ")],
)
def test_one_trailing_line_break_is_stripped(tmp_path: Path, content: bytes, pin: str) -> None:
    assert read_pin_file(pin_file(tmp_path, content)) == pin


@pytest.mark.parametrize(
    ("content", "mode", "fragment"),
    [
        (PIN.encode() + b"\n", 0o644, "mode 0644"),
        (PIN.encode() + b"\n", 0o640, "mode 0640"),
        (PIN.encode() + b"\n", 0o602, "mode 0602"),
        (b"\n", 0o600, "1..255 characters"),
        (b"", 0o600, "1..255 characters"),
        (PIN.encode() + b"\nsecond line\n", 0o600, "line break"),
        (PIN.encode() + b"\x00\n", 0o600, "NUL"),
        (b"\xff\xfe" + PIN.encode(), 0o600, "not UTF-8"),
        (b"x" * 256, 0o600, "1..255 characters"),
    ],
)
def test_bad_pin_files_are_refused_without_showing_the_pin(
    tmp_path: Path, content: bytes, mode: int, fragment: str
) -> None:
    path = pin_file(tmp_path, content, mode)
    with pytest.raises(HsmConfigError) as info:
        HsmConfig(token_label="node-1", pin_file=path).read_pin()
    assert fragment in str(info.value)
    assert str(path) in str(info.value)
    assert PIN not in str(info.value) and PIN not in repr(info.value)


def test_missing_pin_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(HsmConfigError, match="does not exist"):
        read_pin_file(tmp_path / "absent")
    with pytest.raises(HsmConfigError, match="not a regular file"):
        (tmp_path / "d").mkdir(mode=0o700)
        read_pin_file(tmp_path / "d")


def test_pin_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = HsmConfig(token_label="node-1", pin_env="TESSERA_TEST_HSM_PIN")
    monkeypatch.delenv("TESSERA_TEST_HSM_PIN", raising=False)
    with pytest.raises(HsmConfigError) as info:
        config.read_pin()
    assert "TESSERA_TEST_HSM_PIN is not set" in str(info.value)
    monkeypatch.setenv("TESSERA_TEST_HSM_PIN", PIN)
    assert config.read_pin() == PIN  # read lazily: the value at call time


def test_the_pin_is_not_a_field_so_repr_and_str_cannot_show_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESSERA_TEST_HSM_PIN", PIN)
    by_env = HsmConfig(token_label="node-1", pin_env="TESSERA_TEST_HSM_PIN")
    path = tmp_path / "pin"
    write_pin_file(path, PIN)
    by_file = HsmConfig(token_label="node-1", pin_file=path)
    for config in (by_env, by_file):
        assert config.read_pin() == PIN
        for text in (repr(config), str(config), str(config.to_dict())):
            assert PIN not in text


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"token_label": "node-1"}, "pin_env/pin_file"),
        ({"token_label": "node-1", "pin_env": "A", "pin_file": Path("/p")}, "pin_env/pin_file"),
        ({"token_label": "", "pin_env": "A"}, "token_label"),
        ({"token_label": "x" * 33, "pin_env": "A"}, "token_label"),
        ({"token_label": " node", "pin_env": "A"}, "token_label"),
        ({"token_label": "no\nde", "pin_env": "A"}, "token_label"),
        ({"token_label": "node-1", "pin_env": "A=B"}, "pin_env"),
        ({"token_label": "node-1", "pin_file": "/p"}, "pin_file"),
        ({"token_label": "node-1", "pin_env": "A", "softhsm_conf": "/c"}, "softhsm_conf"),
    ],
)
def test_invalid_configs_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(HsmConfigError) as info:
        HsmConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_label_limit_is_32_utf8_bytes() -> None:
    HsmConfig(token_label="x" * 32, pin_env="A")
    HsmConfig(token_label="é" * 16, pin_env="A")
    with pytest.raises(HsmConfigError):
        HsmConfig(token_label="é" * 17, pin_env="A")


def test_dict_and_file_round_trip(tmp_path: Path) -> None:
    config = HsmConfig(
        token_label="node-1",
        pin_file=tmp_path / "pin",
        module_path=Path("/opt/hsm/libvendor.so"),
        softhsm_conf=tmp_path / "softhsm2.conf",
    )
    assert HsmConfig.from_dict(config.to_dict()) == config
    path = tmp_path / CONFIG_FILE_NAME
    config.save(path)
    assert HsmConfig.load(path) == config


def test_from_dict_rejects_unknown_and_malformed_fields(tmp_path: Path) -> None:
    with pytest.raises(HsmConfigError) as info:
        HsmConfig.from_dict({"token_label": "n", "pin_env": "A", "pin": "1234"})
    assert info.value.field == "pin"
    with pytest.raises(HsmConfigError) as info:
        HsmConfig.from_dict({"pin_env": "A"})
    assert info.value.field == "token_label"
    with pytest.raises(HsmConfigError) as info:
        HsmConfig.from_dict({"token_label": "n", "pin_env": 5})
    assert info.value.field == "pin_env"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(HsmConfigError, match="JSON object"):
        HsmConfig.load(bad)
    bad.write_text("{not json")
    with pytest.raises(HsmConfigError, match="not readable JSON"):
        HsmConfig.load(bad)
    with pytest.raises(HsmConfigError, match="does not exist"):
        HsmConfig.load(tmp_path / "absent.json")


def test_default_module_path_is_the_first_existing_candidate() -> None:
    found = default_module_path()
    assert found in MODULE_SEARCH_PATHS
    existing = [p for p in MODULE_SEARCH_PATHS if p.exists()]
    assert found == (existing[0] if existing else MODULE_SEARCH_PATHS[0])


def test_softhsm2_is_installed() -> None:
    """The HSM tests never skip: without SoftHSM2 this fails and says how to install it."""
    module = default_module_path()
    assert module.is_file(), f"{module} missing: apt-get install softhsm2 (./run does)"
    assert any(
        os.access(Path(d) / "softhsm2-util", os.X_OK) for d in os.environ["PATH"].split(os.pathsep)
    ), "softhsm2-util not on PATH: apt-get install softhsm2"
