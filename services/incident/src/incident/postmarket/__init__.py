"""Post-market monitoring log: raw events queryable by incident, model version, equipment,
line and time, exported as CSV or JSON lines.

Other modules append to it inside their own unit of work::

    from incident.postmarket import record

    async with db.session() as session:
        ...  # the change
        await record(session, kind="incident.opened", occurred_at=now,
                     payload={"incident_id": iid, "type": "defect_escape"},
                     incident_id=iid, model="weld-seam-inspector", version="2.1.0", line="line3")
"""

from incident.postmarket._record import record, record_many, row
from incident.postmarket.models import postmarket_event

__all__ = ["postmarket_event", "record", "record_many", "row"]
