"""Linegate edge-gateway service: verified models to line devices over NATS JetStream."""
