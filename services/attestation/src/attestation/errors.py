"""Errors of the attestation service."""

from linegate.errors import Conflict, Forbidden, NotFound


class SupplierNotFound(NotFound):
    title = "Supplier not found"


class SupplierExists(Conflict):
    title = "Supplier already exists"


class KeyAlreadyRegistered(Conflict):
    title = "Key already registered"


class AttestationNotFound(NotFound):
    title = "Attestation not found"


class NotYourSupplier(Forbidden):
    title = "Forbidden"
