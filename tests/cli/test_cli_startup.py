"""``linegate --help`` and the offline verbs do not import what only service calls need.

httpx and pydantic-settings took about 1.6 s of the CLI's 2.7 s start-up (``python -X
importtime``); the commands that talk to a service import them when they run. The test looks
at which modules loading the CLI pulls in, not at a time.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("httpx", "pydantic_settings", "linegate.settings", "fastapi", "sqlalchemy", "nats")


def test_loading_the_cli_imports_no_service_client_or_settings() -> None:
    probe = (
        f"import sys, linegate_cli.main; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def test_help_still_lists_every_verb() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "linegate_cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    for verb in ("attest", "inventory", "model", "evidence", "techfile", "up", "token", "agent"):
        assert verb in out.stdout, out.stdout + out.stderr
