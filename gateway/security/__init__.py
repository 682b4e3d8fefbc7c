"""Who may talk to the gateway: password hashes, and the LoginGuard both adapters share (back-off, decoy)."""
