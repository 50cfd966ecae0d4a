"""Command-line interface (``farfield``)."""
