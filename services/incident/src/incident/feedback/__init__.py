"""Operator feedback: line staff report a wrong output; reports feed the monitors."""
