"""Linegate attestation service: verified supplier attestations, SLAs, embedded OAuth2 issuer."""
