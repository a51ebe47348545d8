"""The device agent's edge side: what runs next to the line once a verified model is installed.

- :mod:`linegate_cli.edge.inference`: the local inference API, fail-safe decisions, input
  statistics and batched telemetry;
- :mod:`linegate_cli.edge.privacy`: redaction and the bounded on-device evidence store;
- :mod:`linegate_cli.edge.saliency`: explanations of rejects.
"""
