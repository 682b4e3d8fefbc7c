"""The cell-gateway command line (typer).

``main`` holds the app and its service commands (run, check-config, hash-password, db, simulate);
``inspection`` the engineer's read commands (status, trace, pallet, job, refusals, events, audit);
``remote`` the OPC UA call through which a command changes the running gateway; ``common`` what they
all share (the --config option, loading it, the checks of what ``run`` needs).
"""
