"""Sidecars that watch Triton: the monitor and the SLO translator."""
