"""Alembic environment: runs on the connection `Store.migrate()` hands over.

There is no alembic.ini or URL here on purpose: the store owns the connection
(and its lock), so migrations always run inside the store's own transaction.
"""

from __future__ import annotations

from alembic import context

from fleetwave.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
