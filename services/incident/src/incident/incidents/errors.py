"""Errors of the incidents side; each renders as RFC 9457 problem+json."""

from linegate.errors import Conflict, Forbidden, NotFound, Unprocessable


class IncidentNotFound(NotFound):
    title = "Incident not found"


class RuleNotFound(NotFound):
    title = "Routing rule not found"


class RunbookNotFound(NotFound):
    title = "Runbook not found"


class ActionNotFound(NotFound):
    title = "Corrective action not found"


class TicketNotFound(NotFound):
    title = "Maintenance ticket not found"


class SnoozeNotFound(NotFound):
    title = "Snooze not found"


class InvalidTransition(Conflict):
    title = "Not allowed in the incident's current status"


class RuleExists(Conflict):
    title = "A routing rule for this type and queue exists"


class GateNotPassed(Conflict):
    title = "An earlier human gate of the runbook is not passed"


class ActionState(Conflict):
    title = "Not allowed in the action's current state"


class DuplicateApproval(Conflict):
    title = "This person has already approved the action"


class FreezeState(Conflict):
    title = "Not allowed in the freeze's current state"


class NotTriaged(Conflict):
    title = "The incident has not been triaged"


class InvalidAction(Unprocessable):
    title = "Corrective action cannot be carried out as proposed"


class InvalidTriage(Unprocessable):
    title = "Triage decision is inconsistent"


class MissingContext(Unprocessable):
    title = "The incident lacks what this needs"


class NotAllowed(Forbidden):
    title = "Not allowed for this caller"


class ClockNotFound(NotFound):
    title = "Reporting clock not found"


class ClockState(Conflict):
    title = "Report already submitted"


class FreezeNotFound(NotFound):
    title = "No evidence freeze"
