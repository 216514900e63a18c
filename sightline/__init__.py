"""Sightline: observability for computer-vision inference on Triton."""
