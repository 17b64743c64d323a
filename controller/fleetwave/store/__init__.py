"""The store: devices, update records, rollout status and the audit trail (SQLite, PostgreSQL)."""
