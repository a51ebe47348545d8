"""Errors of the monitor API."""

from linegate.errors import NotFound, Unprocessable


class MonitorNotFound(NotFound):
    title = "No monitors for this model version on this line"


class InvalidThresholds(Unprocessable):
    title = "Invalid monitor thresholds"
