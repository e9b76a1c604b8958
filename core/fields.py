"""Model fields whose values are sealed at rest with the row's workspace data key (core.crypto).

On a model instance the attribute reads and writes plaintext, as a plain field would: the value
from the database stays sealed until first read, and a plaintext value is sealed when the row is
saved. Everything below the instance deals in ciphertext: ``.values()`` returns sealed bytes, a
lookup on the field is refused, and ``QuerySet.update()`` takes only values sealed for their row by
``sealed_values(instance, field=value, ...)``. So no page, task or admin can store a text in clear
by mistake, and the only code that sees ciphertext is this module and core.crypto.

The associated data names the model, the row's primary key and the field, so the model needs a
primary key known before its first save (a UUID default), and a workspace column to find the key.
An empty value (``""``, ``[]``, ``None``) is stored as NULL.
"""

from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Case, F, Value, When

from core import crypto


class _Ciphertext(bytes):
    """A sealed value as read from the database, opened on first read."""


class _SealedAttribute:
    def __init__(self, field):
        self.field = field

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        name = self.field.attname
        data = instance.__dict__
        if name not in data:  # deferred with .only()/.defer()
            instance.refresh_from_db(fields=[name])
        value = data[name]
        if value is None:
            return self.field.empty_value()
        if isinstance(value, _Ciphertext):
            value = self.field.value_open(instance, value)
            data[name] = value
        return value

    def __set__(self, instance, value):
        instance.__dict__[self.field.attname] = value


class _SealedField(models.BinaryField):
    descriptor_class = _SealedAttribute

    def __init__(self, *args, workspace_field: str = "workspace_id", **kwargs):
        self.workspace_field = workspace_field
        kwargs["null"] = True
        kwargs.setdefault("blank", True)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("null", None)
        if self.workspace_field != "workspace_id":
            kwargs["workspace_field"] = self.workspace_field
        return name, path, args, kwargs

    # --- plaintext <-> bytes, per kind ---
    def encode(self, value) -> bytes:
        raise NotImplementedError

    def decode(self, raw: bytes):
        raise NotImplementedError

    def empty_value(self):
        return self.get_default() if self.has_default() else None

    # --- sealing, bound to the row and the field ---
    def _aad(self, instance) -> bytes:
        if instance.pk is None:
            raise ValueError(f"{self.model._meta.label}.{self.name} is sealed: the row needs its primary key first")
        return crypto.aad_for(self.model._meta.label_lower, instance.pk, self.name)

    def value_seal(self, instance, value) -> _Ciphertext | None:
        if isinstance(value, _Ciphertext):
            return value
        if value is None or value == "" or value == [] or value == {}:
            return None
        workspace_id = getattr(instance, self.workspace_field)
        return _Ciphertext(crypto.seal(workspace_id, self.encode(value), self._aad(instance)))

    def value_open(self, instance, sealed: bytes):
        workspace_id = getattr(instance, self.workspace_field)
        return self.decode(crypto.open_sealed(workspace_id, sealed, self._aad(instance)))

    # --- Django plumbing ---
    def from_db_value(self, value, expression, connection):
        return None if value is None else _Ciphertext(value)

    def pre_save(self, model_instance, add):
        # The instance keeps its plaintext: saving again seals it again, with a new nonce.
        return self.value_seal(model_instance, model_instance.__dict__.get(self.attname))

    def get_db_prep_value(self, value, connection, prepared=False):
        # Only what value_seal made goes to the database: plain bytes would be stored in clear.
        if value is None or isinstance(value, _Ciphertext):
            return super().get_db_prep_value(value, connection, prepared)
        if isinstance(value, str | list | dict) and not value:
            return None
        raise TypeError(
            f"{self.model._meta.label}.{self.name} is sealed at rest: save it on the instance, or pass "
            "core.fields.sealed_values(instance, ...) to update(); it cannot be compared in SQL"
        )

    def get_lookup(self, lookup_name):
        # SQL sees ciphertext: a pattern or comparison would silently match nothing.
        return super().get_lookup(lookup_name) if lookup_name in {"isnull", "exact"} else None

    def value_to_string(self, obj):
        raise TypeError(f"{self.model._meta.label}.{self.name} is sealed: serialize it through the instance")


class SealedTextField(_SealedField):
    def encode(self, value) -> bytes:
        return str(value).encode()

    def decode(self, raw: bytes) -> str:
        return raw.decode()

    def empty_value(self):
        return ""


class SealedJSONField(_SealedField):
    def encode(self, value) -> bytes:
        return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":")).encode()

    def decode(self, raw: bytes):
        return json.loads(raw)


class SealedBytesField(_SealedField):
    def encode(self, value) -> bytes:
        return bytes(value)

    def decode(self, raw: bytes) -> bytes:
        return raw


def sealed_values(instance, **values) -> dict:
    """Column values for ``QuerySet.update()``, sealed for ``instance``'s row (its pk and workspace)."""
    fields = {field.name: field for field in instance._meta.concrete_fields}
    out = {}
    for name, value in values.items():
        field = fields[name]
        out[name] = field.value_seal(instance, value) if isinstance(field, _SealedField) else value
    return out


def sealed_fields(model) -> list[_SealedField]:
    return [field for field in model._meta.concrete_fields if isinstance(field, _SealedField)]


def sealed_update_many(model, updates: dict) -> int:
    """One UPDATE for many rows: ``updates`` maps a primary key to ``sealed_values(...)`` for it.
    (``bulk_update`` reads the attributes, which are plaintext.)"""
    if not updates:
        return 0
    fields = {field.name: field for field in model._meta.concrete_fields}
    names = {name for values in updates.values() for name in values}
    columns = {}
    for name in names:
        whens = [
            When(pk=pk, then=Value(values[name], output_field=fields[name]))
            for pk, values in updates.items()
            if name in values
        ]
        columns[name] = Case(*whens, default=F(name), output_field=fields[name])
    return model._base_manager.filter(pk__in=list(updates)).update(**columns)


def sealed_reseal(model, name: str, *, pk, workspace_id: int, raw) -> _Ciphertext | None:
    """A raw value of ``model.name`` sealed again under its workspace's current data key."""
    if raw is None:
        return None
    aad = crypto.aad_for(model._meta.label_lower, pk, name)
    return _Ciphertext(crypto.seal(workspace_id, crypto.open_sealed(workspace_id, raw, aad), aad))


def sealed_models() -> list:
    """Every installed model with a sealed field (key rotation walks them all)."""
    from django.apps import apps  # the registry is ready only once apps are loaded

    return [model for model in apps.get_models() if sealed_fields(model)]
