"""The ``linegate`` command: the embedded stack, development tokens and (as issues land) the
supplier, model, device-agent and evidence verbs. It talks to services over HTTP and NATS and
never imports them."""

import sys

# httpx imports its own command-line client (click, rich, pygments: ~0.3 s) at import time
# whenever those are installed, and every verb here pays for it before doing anything. The
# None entry makes that import fail, which httpx handles (its ``httpx.main`` then only says
# the CLI's dependencies are missing); nothing here uses httpx's CLI.
if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
