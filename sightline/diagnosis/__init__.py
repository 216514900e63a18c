"""``sightline diagnose`` in three parts: signals (what is read), rules (what it means), report."""
