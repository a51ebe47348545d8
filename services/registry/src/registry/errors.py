"""Errors of the registry service."""

from linegate.errors import Conflict, Forbidden, NotFound, Unprocessable


class SystemNotFound(NotFound):
    title = "AI system not found"


class ModelNotFound(NotFound):
    title = "Model not found"


class VersionNotFound(NotFound):
    title = "Model version not found"


class CandidateNotFound(NotFound):
    title = "Inventory candidate not found"


class AlreadyExists(Conflict):
    title = "Already exists"


class SecurityVersionRollback(Conflict):
    title = "security_version lower than an earlier version's"


class InvalidTransition(Conflict):
    title = "Not allowed in the version's current state"


class ReleaseBlocked(Conflict):
    title = "Release gate not met"


class SelfApproval(Forbidden):
    title = "The uploader may not approve their own version"


class InvalidArtefact(Unprocessable):
    title = "Invalid model artefact"


class DigestMismatch(Unprocessable):
    title = "Digest does not match the declared one"


class InvalidGoldenSet(Unprocessable):
    title = "Invalid golden set"
