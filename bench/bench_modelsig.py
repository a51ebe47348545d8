"""Signing a 1 GiB model folder with ``linegate.modelsig``, beside sha256sum and model_signing.

The folder is the registry's artefact (model.onnx, preprocess.json, model_card.md) plus a
1 GiB ``weights.bin`` (scaled by ``LINEGATE_BENCH_SCALE``), in a temp dir, warm in the page
cache. Every figure is the best of three runs, in MB/s of the folder so higher is better:

- ``sign_model`` in this process (imports done) beside ``sha256sum`` of the same file;
- a fresh Python process calling ``sign_model`` beside the ``model_signing sign key`` CLI on the
  same folder (both pay interpreter start-up and the model_signing import), and the
  ``linegate model sign`` command beside the same CLI;
- ``verify_model`` in this process beside ``sha256sum`` (what a device pays before a swap);
- peak RSS of the fresh signing process (``os.wait4``) at full size beside 1/16 of the size:
  model_signing reads in 1 MiB chunks, so it must not grow with the file.

Issue targets: sign time <= 1.2x sha256sum, never above the model-signing CLI, RSS flat.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _harness import report, scaled
from linegate.modelsig import sign_model, verify_model
from linegate.signing import generate_private_key, private_key_pem, public_key_pem
from linegate.testing.onnx_models import write_model_dir

GIB = 1 << 30
BLOCK = 16 << 20
REPEATS = 3
MS_CLI = Path(sys.executable).parent / "model_signing"
SIGN_SNIPPET = (
    "import sys; from pathlib import Path; from linegate.modelsig import sign_model; "
    "sign_model(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))"
)


def _write_weights(path: Path, size: int) -> None:
    block = os.urandom(min(BLOCK, size))
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _run(argv: list[str | Path]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process, measured for that child alone."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: the child can never block on it
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            message = err.read().decode(errors="replace")
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {message}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports KiB


def _best(fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(REPEATS))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    size = scaled(GIB)
    with tempfile.TemporaryDirectory(prefix="linegate-bench-modelsig-") as tmp:
        root = Path(tmp)
        key = generate_private_key()
        private, public = root / "release.pem", root / "release.pub.pem"
        private.write_bytes(private_key_pem(key))
        public.write_bytes(public_key_pem(key.public_key()))
        model = write_model_dir(root / "model")
        _write_weights(model / "weights.bin", size)
        small = write_model_dir(root / "small")
        _write_weights(small / "weights.bin", max(1, size // 16))
        sig = root / "model.sig"
        mb = _folder_bytes(model) / 1e6
        sha256sum = shutil.which("sha256sum")

        def sha() -> float:
            assert sha256sum is not None
            return _run([sha256sum, model / "weights.bin"])[0]

        def fresh(folder: Path) -> tuple[float, int]:
            return _run([sys.executable, "-c", SIGN_SNIPPET, folder, private, sig])

        fresh(small)  # warms the page cache for both folders and the imports' .pyc files
        fresh(model)
        lib_sign = _best(lambda: _timed(lambda: sign_model(model, private, sig)))
        lib_verify = _best(lambda: _timed(lambda: verify_model(model, public, sig)))
        fresh_sign = _best(lambda: fresh(model)[0])
        linegate_cli = [sys.executable, "-m", "linegate_cli.main", "model", "sign", model]
        cli_sign = _best(lambda: _run([*linegate_cli, "--key", private, "--signature", sig])[0])
        rss_full = max(fresh(model)[1] for _ in range(2))
        rss_small = max(fresh(small)[1] for _ in range(2))
        ref_sha = _best(sha) if sha256sum else float("nan")
        ms_cli = [MS_CLI, "sign", "key", "--private_key", private, "--signature", sig, model]
        ref_ms = _best(lambda: _run(ms_cli)[0]) if MS_CLI.exists() else float("nan")

    label = f"{size / GIB:.2f} GiB"
    if not sha256sum:
        print("[modelsig] sha256sum not found: its reference figures are nan")
    if not MS_CLI.exists():
        print(f"[modelsig] {MS_CLI} not found: its reference figures are nan")
    report(
        "modelsig",
        f"sign_model, {label} folder (in-process)",
        mb / lib_sign,
        "MB/s",
        "sha256sum of the same file",
        mb / ref_sha,
        ">= 0.83 (time <= 1.2x)",
    )
    report(
        "modelsig",
        f"verify_model, {label} folder (in-process)",
        mb / lib_verify,
        "MB/s",
        "sha256sum of the same file",
        mb / ref_sha,
    )
    report(
        "modelsig",
        f"sign_model in a fresh process, {label}",
        mb / fresh_sign,
        "MB/s",
        "`model_signing sign key` CLI, same folder",
        mb / ref_ms,
        ">= 1.00",
    )
    report(
        "modelsig",
        f"`linegate model sign` command, {label}",
        mb / cli_sign,
        "MB/s",
        "`model_signing sign key` CLI, same folder",
        mb / ref_ms,
    )
    report(
        "modelsig",
        f"peak RSS signing {label} (fresh process)",
        rss_full / 2**20,
        "MiB",
        f"peak RSS signing {size / 16 / GIB:.3f} GiB",
        rss_small / 2**20,
        "<= 1.05 (flat)",
    )


if __name__ == "__main__":
    main()
