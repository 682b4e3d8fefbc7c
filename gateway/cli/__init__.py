"""The cell-gateway command line (typer): run, check-config, db, users, and the read-only inspection commands."""
