"""Staged rollouts of a release to line devices.

A plan names a target (selector: plant, line, station, tags, device ids) and ordered stages —
a canary (one line, named devices or the first N devices) then percentages of the target —
each with a soak time, a minimum inference count, abort thresholds (failed devices, self-test
failures, reject-rate delta and confidence drop against the previous version, from telemetry)
and an optional approval before it begins. Installs start only inside the maintenance windows
of the device's line or plant. Commands (start, pause, resume, approve-next-stage, abort,
rollback) are audited with actor and reason. The evaluator (:mod:`.evaluator`) advances
stages, and aborts — moving the stage's devices back and opening an incident — when a
threshold is crossed. Rollouts never wait forever: a device that does not report within the
plan's device timeout is listed as late and no longer holds its stage up.

Example::

    rollout = await service.create_rollout(session, gw.audit, RolloutCreate(...), actor=a, now=t)
    await service.command(gw, rollout.id, "start", actor=a, reason="canary line 3")
    await evaluator.evaluate(gw, now=t)   # the app runs this every few seconds
"""

from edge_gateway.rollouts import calendar, evaluator, kpis, service

__all__ = ["calendar", "evaluator", "kpis", "service"]
