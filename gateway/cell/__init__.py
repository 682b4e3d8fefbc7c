"""The whole cell: the aggregate that applies every command (model.py), the command union and its one
registry (commands.py), and the event log's codec (codec.py). Pure; jobs, tracking and orders lie beneath it."""
