"""Routes of the incidents side: incidents, routing rules, snoozes, runbooks, tickets."""

from fastapi import APIRouter

from incident.incidents.api import config, incidents, maintenance

routers: list[APIRouter] = [incidents.router, config.router, maintenance.router]

__all__ = ["routers"]
