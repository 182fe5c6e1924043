"""The edges users touch: the Python client and (later) the HTTP front door."""
