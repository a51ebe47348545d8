"""Suppliers, their keys and Sigstore identities, attestations and raw blobs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "supplier",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("contacts", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
    )
    op.create_table(
        "supplier_key",
        sa.Column("key_id", sa.String, primary_key=True),
        sa.Column(
            "supplier_id", sa.String, sa.ForeignKey("supplier.id"), nullable=False, index=True
        ),
        sa.Column("public_key_pem", sa.Text, nullable=False),
        sa.Column("algorithm", sa.String, nullable=False),
        sa.Column("not_before", TZ, nullable=False),
        sa.Column("not_after", TZ, nullable=True),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.Column("revocation_reason", sa.String, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "supplier_identity",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "supplier_id", sa.String, sa.ForeignKey("supplier.id"), nullable=False, index=True
        ),
        sa.Column("issuer", sa.String, nullable=False),
        sa.Column("subject", sa.String, nullable=True),
        sa.Column("subject_pattern", sa.String, nullable=True),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "attestation_blob",
        sa.Column("digest", sa.String, primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "attestation",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "supplier_id", sa.String, sa.ForeignKey("supplier.id"), nullable=False, index=True
        ),
        sa.Column("status", sa.String, nullable=False, index=True),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("content_type", sa.String, nullable=False),
        sa.Column("envelope", sa.String, nullable=False),
        sa.Column("raw_digest", sa.String, nullable=False, index=True),
        sa.Column("raw_size", sa.Integer, nullable=False),
        sa.Column("predicate_type", sa.String, nullable=True, index=True),
        sa.Column("predicate_kind", sa.String, nullable=True),
        sa.Column("recognised", sa.Boolean, nullable=False),
        sa.Column("signer", sa.String, nullable=True),
        sa.Column("subjects", sa.JSON, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("issued_at", TZ, nullable=True),
        sa.Column("expires_at", TZ, nullable=True, index=True),
        sa.Column("created_at", TZ, nullable=False, index=True),
        sa.Column("uploaded_by", sa.String, nullable=False),
        sa.UniqueConstraint("supplier_id", "raw_digest", name="uq_attestation_supplier_raw"),
    )
    op.create_table(
        "attestation_subject",
        sa.Column("attestation_id", sa.String, sa.ForeignKey("attestation.id"), primary_key=True),
        sa.Column("algorithm", sa.String, primary_key=True),
        sa.Column("digest", sa.String, primary_key=True, index=True),
        sa.Column("name", sa.String, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "attestation_subject",
        "attestation",
        "attestation_blob",
        "supplier_identity",
        "supplier_key",
        "supplier",
    ):
        op.drop_table(table)
