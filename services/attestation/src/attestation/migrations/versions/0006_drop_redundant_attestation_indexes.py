"""Drop the attestation indexes that no query needs and every upload paid for.

``ix_attestation_supplier_id`` is the leading column of the unique index
``uq_attestation_supplier_raw`` (supplier_id, raw_digest), which serves every lookup by
supplier as well; ``ix_attestation_raw_digest`` serves no query (a raw digest is always
looked up with its supplier, by that same unique index). Each kept a B-tree entry per upload
(the raw digest one on a random page of its tree), written at every group commit.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_attestation_raw_digest", table_name="attestation")
    op.drop_index("ix_attestation_supplier_id", table_name="attestation")


def downgrade() -> None:
    op.create_index("ix_attestation_supplier_id", "attestation", ["supplier_id"])
    op.create_index("ix_attestation_raw_digest", "attestation", ["raw_digest"])
