"""Updating many rows with different values each, in one statement.

Django's ``bulk_update`` writes ``CASE WHEN pk=… THEN …`` per row and per field; building those
expressions costs far more than running the query (most of the ingest pipeline's time went
there). ``rows_update`` sends the values instead: ``UPDATE … FROM (VALUES …)`` on PostgreSQL,
and a prepared statement executed per row on SQLite, where statements run in-process.
"""

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, cast

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Field, Model

Combine = Literal["set", "greatest"]


def rows_update(
    model: type[Model],
    rows: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    *,
    combine: Mapping[str, Combine] | None = None,
) -> int:
    """Set ``fields`` of each row identified by its ``"pk"`` key. ``combine`` may ask for a
    field to keep the greater of the stored and the given value. Returns rows sent."""
    if not rows:
        return 0
    combine = combine or {}
    meta = model._meta
    table = connection.ops.quote_name(meta.db_table)
    pk_field = meta.pk
    assert pk_field is not None
    pk_column = connection.ops.quote_name(str(pk_field.column))
    model_fields = [cast(Field, meta.get_field(name)) for name in fields]
    columns = [connection.ops.quote_name(str(f.column)) for f in model_fields]

    adapters = [_update_adapter(pk_field), *(_update_adapter(f) for f in model_fields)]
    values = _flat_params([(row["pk"], *(row[name] for name in fields)) for row in rows], adapters)
    width = len(fields) + 1

    def assignment(name: str, column: str, source: str) -> str:
        if combine.get(name) == "greatest":
            greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
            return f"{column} = {greatest}({table}.{column}, {source})"
        return f"{column} = {source}"

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            types = [pk_field.db_type(connection)] + [f.db_type(connection) for f in model_fields]
            placeholder = "(" + ", ".join(f"%s::{t}" for t in types) + ")"
            aliases = ", ".join(["pk", *(f"v{i}" for i in range(len(fields)))])
            sets = ", ".join(
                assignment(name, column, f"v.v{i}")
                for i, (name, column) in enumerate(zip(fields, columns, strict=True))
            )
            sql = (
                f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([placeholder] * len(rows))})"
                f" AS v({aliases}) WHERE {table}.{pk_column} = v.pk"
            )
            cursor.execute(sql, values)
        else:
            sets = ", ".join(
                assignment(name, column, "%s") for name, column in zip(fields, columns, strict=True)
            )
            sql = f"UPDATE {table} SET {sets} WHERE {pk_column} = %s"
            cursor.executemany(
                sql,
                [
                    [*values[start + 1 : start + width], values[start]]
                    for start in range(0, len(values), width)
                ],
            )
    return len(rows)


def rows_insert(
    model: type[Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    ignore_conflicts: bool = False,
) -> int:
    """Insert rows given as value tuples in ``fields`` order, without building model instances
    (their construction and Django's per-value compilation cost more than the insert itself).
    Values must be what the fields hold in Python; JSON and datetimes are adapted here. With
    ``ignore_conflicts`` a row that breaks a unique constraint is skipped, as ``bulk_create``
    skips it."""
    if not rows:
        return 0
    meta = model._meta
    model_fields = [cast(Field, meta.get_field(name)) for name in fields]
    adapters = [_adapter(field) for field in model_fields]
    table = connection.ops.quote_name(meta.db_table)
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in model_fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    # Stay under SQLite's bound-parameter cap; PostgreSQL takes the whole batch at once.
    per_statement = max(1, 999 // len(fields)) if connection.vendor == "sqlite" else len(rows)
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholder] * len(chunk))}"
                + conflict,
                _flat_params(chunk, adapters),
            )
    return len(rows)


Adapter = Callable[[Any], Any]


def _flat_params(rows: Sequence[Sequence[Any]], adapters: Sequence[Adapter | None]) -> list[Any]:
    """The rows' values in order, adapted column by column (``map`` runs in C; most columns
    need no adapter at all)."""
    if not any(adapters):
        return [value for row in rows for value in row]
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) or [() for _ in adapters]
    for index, adapt in enumerate(adapters):
        if adapt is not None:
            columns[index] = list(map(adapt, columns[index]))
    return [value for row in zip(*columns, strict=True) for value in row]


def _adapter(field: "Field[Any, Any]") -> Adapter | None:
    internal = field.get_internal_type()
    if internal == "JSONField":
        return _json
    if internal == "DateTimeField":
        return _datetime_adapter()
    return None


# Fields whose Python values the database drivers take as they are.
_PLAIN = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "BigIntegerField",
        "BooleanField",
        "CharField",
        "FloatField",
        "ForeignKey",
        "IntegerField",
        "PositiveBigIntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SmallAutoField",
        "SmallIntegerField",
        "TextField",
    }
)


def _update_adapter(field: "Field[Any, Any]") -> Adapter | None:
    """As ``_adapter``, and Django's own preparation for any field not known to be plain."""
    internal = field.get_internal_type()
    if internal in ("JSONField", "DateTimeField") or internal in _PLAIN:
        return _adapter(field)
    return lambda value: field.get_db_prep_value(value, connection)


def _datetime_adapter() -> Adapter | None:
    """What the backend does to a datetime parameter, without its per-call overhead.

    PostgreSQL's driver adapts aware datetimes itself. SQLite stores text: the instant in the
    connection's time zone (UTC unless the database's settings say otherwise), as Django's
    ``adapt_datetimefield_value`` writes it; a naive value is passed as it is."""
    if connection.vendor == "postgresql":
        return None
    if connection.vendor != "sqlite" or not settings.USE_TZ:
        return connection.ops.adapt_datetimefield_value
    zone = connection.timezone

    def adapt(value: Any) -> Any:
        if value is None or not isinstance(value, datetime):
            return connection.ops.adapt_datetimefield_value(value)
        if value.tzinfo is not None and value.utcoffset() is not None:
            value = value.astimezone(zone).replace(tzinfo=None)
        return value.isoformat(" ")

    return adapt


def _json(value: Any) -> str:
    """JSON text a database accepts: PostgreSQL refuses the NUL character in JSON."""
    try:
        text = json.dumps(value)  # the shared C encoder: most values need nothing more
    except TypeError:
        text = json.dumps(value, cls=DjangoJSONEncoder)
    if "\\u0000" in text:  # rare: clean the value itself rather than patching escaped text
        text = json.dumps(_without_nul(value), cls=DjangoJSONEncoder)
    return text


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def where_in(column: str, values: Collection[Any]) -> tuple[str, list[Any]]:
    """``column IN (…)`` as SQL and parameters: one array parameter on PostgreSQL, whatever the
    number of values, and a placeholder each on SQLite (which binds up to 32766 since 3.32)."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    if not values:
        return "1 = 0", []
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)
