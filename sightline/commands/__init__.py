"""The command groups of the ``sightline`` command line (``sightline.cli`` builds the parser)."""
