"""Alembic migrations of riskroute's database (`riskroute db upgrade`)."""
