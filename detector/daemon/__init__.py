"""``detector run``: the long-running service on login and data-transfer nodes."""
