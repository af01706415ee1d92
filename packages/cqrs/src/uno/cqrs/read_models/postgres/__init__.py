"""Read models in PostgreSQL JSONB (psycopg 3 and psycopg_pool: the ``[postgres]`` extra)."""

from uno.cqrs.read_models.postgres._repository import PostgresRepository

__all__ = ["PostgresRepository"]
