"""Storage: the SQLAlchemy Core schema and Alembic migrations, the Store the writer commits through, the
rows of a batch, and the read side (queries for the CLI and the status page, the ERP reads)."""
