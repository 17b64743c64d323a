"""PostgreSQL fixtures (filled by the store work)."""
