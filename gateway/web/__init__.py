"""The status page for a shop-floor screen, metrics and health: served on the gateway's HTTP port."""
