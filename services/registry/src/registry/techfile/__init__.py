"""Compliance evidence from the registry: the Annex IV technical file (:mod:`.document`), the
signed auditor bundle (:mod:`.bundle`), the controls matrix (:mod:`.controls`) and the portfolio
report (:mod:`.portfolio`), built from the registry's tables and the other services' APIs."""
