"""The whole cell: the aggregate that applies every command (jobs, tracking, orders beneath it)."""
