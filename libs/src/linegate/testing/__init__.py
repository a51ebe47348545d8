"""Test fixtures for Linegate: real nats-server, real databases, running service apps.

Load them with ``pytest_plugins = ["linegate.testing.fixtures"]`` in ``tests/conftest.py``.
The building blocks here (:class:`NatsServer`, :func:`postgres_url`, :func:`free_port`) are
plain classes and functions so benchmarks and the CLI's own tests can use them too.
"""

from linegate.embedded import NatsServer, free_port, nats_server_binary
from linegate.testing.postgres import drop_schemas, postgres_url

__all__ = ["NatsServer", "drop_schemas", "free_port", "nats_server_binary", "postgres_url"]
