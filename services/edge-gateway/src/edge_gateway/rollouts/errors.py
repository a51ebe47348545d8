"""Errors of rollouts (rendered as problem+json like every other gateway error)."""

from linegate.errors import Conflict, NotFound, Unprocessable


class RolloutNotFound(NotFound):
    title = "Rollout not found"


class RolloutStateConflict(Conflict):
    """The command is not valid in the rollout's current state."""

    title = "Invalid rollout transition"


class RolloutOverlap(Conflict):
    title = "Devices already in another rollout"


class RolloutInvalid(Unprocessable):
    title = "Rollout plan cannot be carried out"


class CalendarNotFound(NotFound):
    title = "Maintenance calendar not found"
