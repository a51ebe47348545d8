"""``linegate model sign|verify`` on real ONNX model folders with real EC keys."""

import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from typer.testing import CliRunner

from linegate.modelsig import sign_model, verify_model
from linegate.signing import key_id, private_key_pem, public_key_pem
from linegate.testing.onnx_models import write_model_dir
from linegate_cli.main import app

VERIFIED = re.compile(r"verified: 3 files, manifest sha256:[0-9a-f]{64}, key [0-9a-f]{16}")


@dataclass
class KeyPair:
    private: Path
    public: Path
    key_id: str


def make_keys(directory: Path, name: str, key=None) -> KeyPair:
    key = key or ec.generate_private_key(ec.SECP256R1())
    private, public = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    private.write_bytes(private_key_pem(key))
    public.write_bytes(public_key_pem(key.public_key()))
    return KeyPair(private, public, key_id(key.public_key()))


@pytest.fixture
def keys(tmp_path) -> KeyPair:
    return make_keys(tmp_path, "release")


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model_dir(tmp_path / "model")


@pytest.fixture
def signature(model, keys, tmp_path) -> Path:
    path = tmp_path / "model.sig"
    sign_model(model, keys.private, path)
    return path


def run(*args: str | Path):
    return CliRunner().invoke(app, ["model", *map(str, args)])


def verify(model: Path, signature: Path, public_key: Path, *extra: str | Path):
    return run("verify", model, "--signature", signature, "--public-key", public_key, *extra)


def test_verify_prints_one_verified_line_and_exits_0(model, signature, keys):
    result = verify(model, signature, keys.public)

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    (line,) = result.stdout.splitlines()
    assert VERIFIED.fullmatch(line)
    expected = verify_model(model, keys.public, signature)
    assert f"manifest sha256:{expected.manifest_sha256}," in line
    assert line.endswith(f"key {keys.key_id[:16]}")


def test_a_changed_model_exits_1_with_one_error_line_naming_the_file(model, signature, keys):
    (model / "model.onnx").write_bytes((model / "model.onnx").read_bytes() + b"\x00")
    result = verify(model, signature, keys.public)

    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert "changed since signing: model.onnx" in line


def test_an_added_file_exits_1(model, signature, keys):
    (model / "extra.txt").write_text("x")
    result = verify(model, signature, keys.public)
    assert result.exit_code == 1
    assert "(added): extra.txt" in result.stderr


def test_a_removed_file_exits_1(model, signature, keys):
    (model / "model_card.md").unlink()
    result = verify(model, signature, keys.public)
    assert result.exit_code == 1
    assert "missing (removed or ignored): model_card.md" in result.stderr


def test_the_wrong_key_exits_1(model, signature, tmp_path):
    other = make_keys(tmp_path, "other")
    result = verify(model, signature, other.public)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: signature was made with a different key")


def test_another_models_signature_exits_1(keys, signature, tmp_path):
    other_model = write_model_dir(tmp_path / "other", bad_class=0)
    result = verify(other_model, signature, keys.public)
    assert result.exit_code == 1
    assert "model.onnx" in result.stderr


def test_a_missing_signature_exits_1_not_a_usage_error(model, keys, tmp_path):
    result = verify(model, tmp_path / "absent.sig", keys.public)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot read signature")


def test_ignore_path_is_taken_from_the_current_directory(
    model, signature, keys, tmp_path, monkeypatch
):
    (model / "device.log").write_text("boot\n")
    monkeypatch.chdir(tmp_path)
    assert verify(model, signature, keys.public).exit_code == 1

    result = verify(model, signature, keys.public, "--ignore-path", "model/device.log")
    assert result.exit_code == 0, result.output
    assert VERIFIED.fullmatch(result.stdout.strip())


def test_sign_then_verify_with_the_signature_inside_the_folder(model, keys):
    signature = model / "model.sig"
    signed = run("sign", model, "--key", keys.private, "--signature", signature)
    assert signed.exit_code == 0, signed.output
    assert signed.stdout.startswith("signed: 3 files into ")
    assert signed.stdout.strip().endswith(f"key {keys.key_id[:16]}")

    result = verify(model, signature, keys.public)
    assert result.exit_code == 0, result.output
    assert VERIFIED.fullmatch(result.stdout.strip())


def test_sign_with_ignore_paths_leaves_them_out(model, keys, tmp_path, monkeypatch):
    (model / "scratch.txt").write_text("draft")
    monkeypatch.chdir(model)
    signed = run("sign", ".", "--key", keys.private, "--signature", tmp_path / "s.sig")
    assert signed.exit_code == 0, signed.output
    assert "4 files" in signed.stdout
    signed = run(
        "sign", ".", "--key", keys.private, "--signature", tmp_path / "s.sig",
        "--ignore-path", "scratch.txt",
    )  # fmt: skip
    assert signed.exit_code == 0, signed.output
    assert "3 files" in signed.stdout
    (model / "scratch.txt").write_text("edited")
    assert verify(model, tmp_path / "s.sig", keys.public).exit_code == 0


def test_sign_with_a_non_ec_key_exits_1(model, tmp_path):
    ed = make_keys(tmp_path, "ed", ed25519.Ed25519PrivateKey.generate())
    result = run("sign", model, "--key", ed.private, "--signature", tmp_path / "s.sig")
    assert result.exit_code == 1
    assert "need an EC key" in result.stderr
    assert not (tmp_path / "s.sig").exists()


def test_missing_options_are_a_usage_error(model):
    assert run("verify", model).exit_code == 2


def test_verify_works_with_the_network_refused(model, signature, keys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    result = verify(model, signature, keys.public)
    assert result.exit_code == 0, result.output


def test_the_installed_command_prints_exactly_one_line(model, signature, keys):
    # Through the real entry point: nothing else (warnings, logging) may reach stdout or stderr.
    argv = [sys.executable, "-m", "linegate_cli.main", "model", "verify", model]
    argv += ["--signature", signature, "--public-key", keys.public]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert VERIFIED.fullmatch(result.stdout.rstrip("\n"))
    assert result.stdout.count("\n") == 1
