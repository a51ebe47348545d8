"""Dependencies of the incidents routes: the runtime and who may do what."""

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from incident.incidents.runtime import Incidents
from linegate.auth import Principal, Role, require


def get_incidents(request: Request) -> Incidents:
    incidents: Incidents = request.app.state.incidents
    return incidents


IncidentsDep = Annotated[Incidents, Depends(get_incidents)]


def get_now(incidents: IncidentsDep) -> datetime:
    return incidents.clock()


NowDep = Annotated[datetime, Depends(get_now)]
#: Works incidents: acknowledges, proposes and approves corrective actions, triages, freezes.
ResponderDep = Annotated[Principal, Depends(require(Role.RESPONDER))]
#: Reads incidents, clocks, reports: responders and auditors.
ReaderDep = Annotated[Principal, Depends(require(Role.RESPONDER, Role.AUDITOR))]
#: Edits routing rules.
AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
