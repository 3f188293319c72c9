"""Alembic migrations of nimflow's own tables, run by nimflow._schema when a store opens."""
