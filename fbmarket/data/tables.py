"""The listing database's tables (SQLAlchemy Core): the schema `Store` reads and writes.

Kept apart from store.py so the Alembic environment (data/migrations/env.py) can compare a
database with them without importing the store, which itself runs the migrations.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

listings = sa.Table(
    "listings",
    metadata,
    sa.Column("product_id", sa.String(64), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("root_category", sa.Text, nullable=False, index=True),
    sa.Column("leaf_category", sa.Text, nullable=False),
    sa.Column("leaf_name", sa.Text, nullable=False),
    sa.Column("price", sa.Float, nullable=True),
    sa.Column("location", sa.Text, nullable=False, default=""),
    sa.Column("town", sa.Text, nullable=True),
    sa.Column("county", sa.Text, nullable=True),
    sa.Column("latitude", sa.Float, nullable=True),
    sa.Column("longitude", sa.Float, nullable=True),
    sa.Column("geo_match", sa.String(16), nullable=False, default="unknown"),
    sa.Column("created", sa.DateTime(timezone=True), nullable=True),  # read back as its ISO date
    sa.Column("split", sa.String(8), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("image_id", sa.String(64), primary_key=True),
    sa.Column(
        "product_id", sa.String(64), sa.ForeignKey("listings.product_id", ondelete="CASCADE"), index=True
    ),
    sa.Column("position", sa.Integer, nullable=False, default=0),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("aspect", sa.Float, nullable=False),
    sa.Column("original_mode", sa.String(16), nullable=False),
)

embeddings = sa.Table(
    "embeddings",
    metadata,
    sa.Column(
        "product_id",
        sa.String(64),
        sa.ForeignKey("listings.product_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),  # little-endian float32
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("age", sa.Integer, nullable=True),
    sa.Column("gender", sa.String(16), nullable=True),
    sa.Column("location", sa.Text, nullable=True),
    sa.Column("latitude", sa.Float, nullable=True),
    sa.Column("longitude", sa.Float, nullable=True),
    sa.Column(
        "extra", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
    ),  # any further Users.csv columns
)

interactions = sa.Table(
    "interactions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(64), nullable=False, index=True),
    sa.Column("product_id", sa.String(64), nullable=False, index=True),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("query", sa.Text, nullable=True),
    sa.UniqueConstraint("user_id", "product_id", "event", "timestamp", name="uq_interaction"),
)
