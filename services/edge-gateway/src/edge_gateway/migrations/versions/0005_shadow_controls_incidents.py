"""Shadow stages, device controls ordered by incidents, evidence freezes, incident actions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("desired_state") as batch:
        batch.add_column(sa.Column("shadow_release_id", sa.String, nullable=True))
        batch.add_column(sa.Column("control", sa.JSON, nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer, nullable=False, server_default="0"))
        batch.create_foreign_key(
            "fk_desired_state_shadow_release", "release", ["shadow_release_id"], ["id"]
        )
    with op.batch_alter_table("rollout_device") as batch:
        batch.add_column(
            sa.Column("shadow_inferences", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("shadow_disagreements", sa.Integer, nullable=False, server_default="0")
        )
    op.create_table(
        "frozen_version",
        sa.Column("model", sa.String, primary_key=True),
        sa.Column("version", sa.String, primary_key=True),
        sa.Column("incident_id", sa.String, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("frozen_at", TZ, nullable=False),
        sa.Column("frozen_by", sa.String, nullable=False),
    )
    op.create_table(
        "gateway_action",
        sa.Column("action_id", sa.String, primary_key=True),
        sa.Column("incident_id", sa.String, nullable=False, index=True),
        sa.Column("action", sa.String, nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=True),
        sa.Column("outcome", sa.String, nullable=False),
        sa.Column("devices", sa.JSON, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("received_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_action")
    op.drop_table("frozen_version")
    with op.batch_alter_table("rollout_device") as batch:
        batch.drop_column("shadow_disagreements")
        batch.drop_column("shadow_inferences")
    with op.batch_alter_table("desired_state") as batch:
        batch.drop_constraint("fk_desired_state_shadow_release", type_="foreignkey")
        batch.drop_column("revision")
        batch.drop_column("control")
        batch.drop_column("shadow_release_id")
