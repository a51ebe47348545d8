"""Linegate shared kernel.

Only what two or more services (or a service and the CLI) share lives here:
``settings``, ``db``, ``auth``, ``events``, ``audit``, ``signing``, ``errors``,
``observability``, ``service`` (the common app factory) and ``testing`` (pytest fixtures).
"""

__version__ = "0.1.0"
