"""Linegate registry service: signed model versions, AI inventory, risk classes, release gate."""
