"""Tables of the telemetry side: what was seen (dedup), what was refused (dead letters), and
the incrementally aggregated windows the monitors read.

A window is one shift of one model version on one line (``telemetry_window``), of one camera
of it (``camera_window``: input statistics), or of one line's production figures
(``kpi_window``). Every column but the key and ``updated_at`` is a sum, so an ingest batch adds
to it with one ``INSERT ... ON CONFLICT DO UPDATE SET c = c + excluded.c`` and replicas never
lose each other's counts. Memory does not grow with the stream: raw events go to the
post-market log, windows hold counts, moments and a fixed confidence histogram.
"""

from __future__ import annotations

import sqlalchemy as sa

TZ = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Confidence histogram: bins of width 1 / N_BINS over [0, 1].
N_BINS = 20
HIST = tuple(f"h{i:02d}" for i in range(N_BINS))

metadata = sa.MetaData()

telemetry_seen = sa.Table(
    "telemetry_seen",
    metadata,
    #: The event id, or ``dl:<stream seq>`` for a dead-lettered message.
    sa.Column("event_id", sa.String(160), primary_key=True),
    sa.Column("seen_at", TZ, nullable=False, index=True),
)

telemetry_dead_letter = sa.Table(
    "telemetry_dead_letter",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("received_at", TZ, nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("stream_seq", sa.BigInteger, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("truncated", sa.Boolean, nullable=False),
)

WINDOW_SUMS = (
    "n",
    "passes",
    "rejects",
    "manual",
    "conf_n",
    "conf_sum",
    "conf_sumsq",
    *HIST,
    "latency_sum",
    "overrides",
    "overrides_to_pass",
    "overrides_to_reject",
    "feedback",
)
_FLOATS = {"conf_sum", "conf_sumsq", "latency_sum"}

telemetry_window = sa.Table(
    "telemetry_window",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100), primary_key=True),
    sa.Column("line", sa.String(64), primary_key=True),
    sa.Column("bucket_start", TZ, primary_key=True),
    sa.Column("bucket_end", TZ, nullable=False),
    sa.Column("shift", sa.String(64), nullable=False),
    *(sa.Column(c, sa.Float if c in _FLOATS else sa.Integer, nullable=False) for c in WINDOW_SUMS),
    sa.Column("updated_at", TZ, nullable=False, index=True),
)

STATS = ("brightness", "contrast", "sharpness")
CAMERA_SUMS = ("n", *(f"{s}_{m}" for s in STATS for m in ("sum", "sumsq")))

camera_window = sa.Table(
    "camera_window",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100), primary_key=True),
    sa.Column("line", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("camera", sa.String(64), primary_key=True),
    sa.Column("bucket_start", TZ, primary_key=True),
    *(sa.Column(c, sa.Integer if c == "n" else sa.Float, nullable=False) for c in CAMERA_SUMS),
    sa.Column("updated_at", TZ, nullable=False),
)

KPI_SUMS = ("samples", "produced", "scrap", "rework", "escapes", "oee_sum", "oee_n")

kpi_window = sa.Table(
    "kpi_window",
    metadata,
    sa.Column("line", sa.String(64), primary_key=True),
    sa.Column("bucket_start", TZ, primary_key=True),
    #: The version the MES attributes the figures to; "" when it does not know.
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100), primary_key=True),
    sa.Column("bucket_end", TZ, nullable=False),
    sa.Column("shift", sa.String(64), nullable=False),
    *(sa.Column(c, sa.Float if c == "oee_sum" else sa.Integer, nullable=False) for c in KPI_SUMS),
    sa.Column("updated_at", TZ, nullable=False, index=True),
)
