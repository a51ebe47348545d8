"""Evidence freezes held per incident: a version stays frozen until every incident released it.

``frozen_version`` kept one row per model version, so a second incident's freeze took the
version over and its release unfroze it while the first still held it as evidence.
``freeze_hold`` keeps one row per (model, version, incident); each existing freeze becomes the
hold of the incident it names.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _create(name: str, *, per_incident: bool) -> None:
    op.create_table(
        name,
        sa.Column("model", sa.String, primary_key=True),
        sa.Column("version", sa.String, primary_key=True),
        sa.Column("incident_id", sa.String, primary_key=per_incident, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("frozen_at", TZ, nullable=False),
        sa.Column("frozen_by", sa.String, nullable=False),
    )


def upgrade() -> None:
    _create("freeze_hold", per_incident=True)
    op.execute(
        "INSERT INTO freeze_hold (model, version, incident_id, reason, frozen_at, frozen_by) "
        "SELECT model, version, incident_id, reason, frozen_at, frozen_by FROM frozen_version"
    )
    op.drop_table("frozen_version")


def downgrade() -> None:
    # The old table holds one freeze per version: the oldest hold's (the others are lost,
    # and the version is released when that incident releases it, as before 0008).
    _create("frozen_version", per_incident=False)
    op.execute(
        "INSERT INTO frozen_version (model, version, incident_id, reason, frozen_at, frozen_by) "
        "SELECT model, version, incident_id, reason, frozen_at, frozen_by FROM freeze_hold h "
        "WHERE NOT EXISTS (SELECT 1 FROM freeze_hold o WHERE o.model = h.model "
        "AND o.version = h.version AND (o.frozen_at < h.frozen_at "
        "OR (o.frozen_at = h.frozen_at AND o.incident_id < h.incident_id)))"
    )
    op.drop_table("freeze_hold")
