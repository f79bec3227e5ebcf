"""The schema as `metadata.create_all` made it before migrations (timestamps as strings).

A database from before Alembic holds exactly this schema and no `alembic_version` table;
`migrations.migrate` stamps such a database with this revision instead of running it.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "listings",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("root_category", sa.Text, nullable=False),
        sa.Column("leaf_category", sa.Text, nullable=False),
        sa.Column("leaf_name", sa.Text, nullable=False),
        sa.Column("price", sa.Float, nullable=True),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("town", sa.Text, nullable=True),
        sa.Column("county", sa.Text, nullable=True),
        sa.Column("latitude", sa.Float, nullable=True),
        sa.Column("longitude", sa.Float, nullable=True),
        sa.Column("geo_match", sa.String(16), nullable=False),
        sa.Column("created", sa.String(10), nullable=True),
        sa.Column("split", sa.String(8), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_listings_root_category", "listings", ["root_category"])
    op.create_table(
        "images",
        sa.Column("image_id", sa.String(64), primary_key=True),
        sa.Column(
            "product_id", sa.String(64), sa.ForeignKey("listings.product_id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("aspect", sa.Float, nullable=False),
        sa.Column("original_mode", sa.String(16), nullable=False),
    )
    op.create_index("ix_images_product_id", "images", ["product_id"])
    op.create_table(
        "embeddings",
        sa.Column(
            "product_id",
            sa.String(64),
            sa.ForeignKey("listings.product_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("age", sa.Integer, nullable=True),
        sa.Column("gender", sa.String(16), nullable=True),
        sa.Column("location", sa.Text, nullable=True),
        sa.Column("latitude", sa.Float, nullable=True),
        sa.Column("longitude", sa.Float, nullable=True),
        sa.Column("extra", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
    )
    op.create_table(
        "interactions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("timestamp", sa.String(32), nullable=False),
        sa.Column("query", sa.Text, nullable=True),
        sa.UniqueConstraint("user_id", "product_id", "event", "timestamp", name="uq_interaction"),
    )
    op.create_index("ix_interactions_user_id", "interactions", ["user_id"])
    op.create_index("ix_interactions_product_id", "interactions", ["product_id"])


def downgrade() -> None:
    for table in ("interactions", "users", "embeddings", "images", "listings"):
        op.drop_table(table)
