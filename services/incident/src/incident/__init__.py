"""Linegate incident service: telemetry, drift vs scrap, AI incident triage, post-market log."""
