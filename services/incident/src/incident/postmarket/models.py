"""The post-market monitoring log (EU AI Act Art. 72): every raw event the service saw.

One row per inference record, override, KPI sample, operator feedback and incident event, in
arrival order (``id``), with the columns it is queried by. ``payload`` is the event's JSON as
received (inference records: the record plus the batch's line and device), so an export
reproduces what was observed, not what the monitors made of it.
"""

from __future__ import annotations

import sqlalchemy as sa

TZ = sa.DateTime(timezone=True)
#: BIGINT on PostgreSQL; SQLite only auto-increments an ``INTEGER PRIMARY KEY``.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

postmarket_event = sa.Table(
    "postmarket_event",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("occurred_at", TZ, nullable=False),
    sa.Column("recorded_at", TZ, nullable=False),
    sa.Column("event_id", sa.String(128), nullable=True),
    sa.Column("incident_id", sa.String(128), nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("version", sa.String(100), nullable=True),
    sa.Column("device_id", sa.String(64), nullable=True),
    sa.Column("line", sa.String(64), nullable=True),
    sa.Column("station", sa.String(64), nullable=True),
    #: The inference record an inference, override or feedback row is about.
    sa.Column("record_id", sa.String(128), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
)

#: Each query filter walks its own index in id order (keyset pagination).
INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ix_postmarket_incident", ("incident_id", "id")),
    ("ix_postmarket_model_version", ("model", "version", "id")),
    ("ix_postmarket_device", ("device_id", "id")),
    ("ix_postmarket_line", ("line", "id")),
    ("ix_postmarket_occurred", ("occurred_at",)),
    ("ix_postmarket_record", ("record_id",)),
)
