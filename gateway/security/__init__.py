"""Who may talk to the gateway: password hashing, and (later) users, roles and certificates."""
