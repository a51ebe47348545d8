"""Who may do what on the telemetry side, and how handlers reach the running parts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from incident.monitors.runner import MonitorRunner
from incident.telemetry.runtime import Telemetry
from linegate.auth import Principal, Role, require

#: Reads monitors, windows, dead letters, feedback and the post-market log.
ReaderDep = Annotated[Principal, Depends(require(Role.RESPONDER, Role.AUDITOR))]
#: Changes monitor thresholds and reference windows (admin holds every role).
MonitorWriterDep = Annotated[Principal, Depends(require(Role.RESPONDER))]
#: Reports a wrong output: line staff (``operator``, who may do nothing else), and responders
#: reporting on the line's behalf.
FeedbackDep = Annotated[Principal, Depends(require(Role.OPERATOR, Role.RESPONDER))]


def get_telemetry(request: Request) -> Telemetry:
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


def get_runner(request: Request) -> MonitorRunner:
    return get_telemetry(request).runner


TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
RunnerDep = Annotated[MonitorRunner, Depends(get_runner)]
