"""The service layer: the one writer that applies commands in order and answers after commit, its
storage port, the committed views and the feed that publishes after commit, and the replay of the log."""
