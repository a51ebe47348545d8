"""Telemetry ingest: device inference batches, operator overrides and line KPI samples from
JetStream into incrementally aggregated windows and the post-market log."""
