"""Monitors per model version x line: confidence and input drift, reject and override rates,
and the outcome monitor (escapes and scrap against the model's own confidence)."""
