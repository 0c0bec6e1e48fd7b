"""Updating many rows with different values each, in one statement.

Django's ``bulk_update`` writes ``CASE WHEN pk=… THEN …`` per row and per field; building those
expressions costs far more than running the query (most of the ingest pipeline's time went
there). ``rows_update`` sends the values instead: ``UPDATE … FROM (VALUES …)`` on PostgreSQL,
and a prepared statement executed per row on SQLite, where statements run in-process.

``rows_copy`` inserts many rows with PostgreSQL's ``COPY``, a few times faster than a
multi-row ``INSERT`` (which the server must parse, and psycopg quote value by value); on SQLite
with one prepared statement run per row.
"""

import io
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
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

    def prepared(row: Mapping[str, Any]) -> list[Any]:
        values = [pk_field.get_db_prep_value(row["pk"], connection)]
        for name, field in zip(fields, model_fields, strict=True):
            values.append(field.get_db_prep_value(row[name], connection))
        return values

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
            cursor.execute(sql, [value for row in rows for value in prepared(row)])
        else:
            sets = ", ".join(
                assignment(name, column, "%s") for name, column in zip(fields, columns, strict=True)
            )
            sql = f"UPDATE {table} SET {sets} WHERE {pk_column} = %s"
            params = []
            for row in rows:
                pk, *values = prepared(row)
                params.append([*values, pk])
            cursor.executemany(sql, params)
    return len(rows)


def rows_insert(model: type[Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Insert rows given as value tuples in ``fields`` order, without building model instances
    (their construction and Django's per-value compilation cost more than the insert itself).
    Values must be what the fields hold in Python; JSON and datetimes are adapted here."""
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
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = [
                adapt(value) for row in chunk for adapt, value in zip(adapters, row, strict=True)
            ]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholder] * len(chunk))}",
                params,
            )
    return len(rows)


def rows_copy(model: type[Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """``rows_insert`` by ``COPY … FROM STDIN`` on PostgreSQL (through psycopg2), else
    ``rows_insert`` itself. Values as for ``rows_insert``: what the fields hold in Python."""
    if not rows:
        return 0
    if connection.vendor == "sqlite":
        return _sqlite_insert(model, fields, rows)
    with connection.cursor() as cursor:
        raw = cursor.cursor
        if connection.vendor != "postgresql" or not hasattr(raw, "copy_expert"):
            return rows_insert(model, fields, rows)
        meta = model._meta
        model_fields = [cast(Field, meta.get_field(name)) for name in fields]
        table = connection.ops.quote_name(meta.db_table)
        columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in model_fields)
        is_json = [f.get_internal_type() == "JSONField" for f in model_fields]
        if any(is_json):
            rows = [
                [_json(value) if j else value for j, value in zip(is_json, row, strict=True)]
                for row in rows
            ]
        text = "".join("\t".join(map(_copy_text, row)) + "\n" for row in rows)
        raw.copy_expert(f"COPY {table} ({columns}) FROM STDIN", io.StringIO(text))
    return len(rows)


def _sqlite_insert(model: type[Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """One prepared INSERT run per row: SQLite runs in-process, so a statement per row costs
    less than building, converting and compiling long multi-row ones."""
    meta = model._meta
    model_fields = [cast(Field, meta.get_field(name)) for name in fields]
    table = connection.ops.quote_name(meta.db_table)
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in model_fields)
    adapted: list[tuple[int, Callable[[Any], Any]]] = []
    for i, field in enumerate(model_fields):
        internal = field.get_internal_type()
        if internal == "JSONField":
            adapted.append((i, _json))
        elif internal == "DateTimeField":
            adapted.append((i, _sqlite_datetime_adapter()))
    params: Sequence[Sequence[Any]] = rows
    if adapted:
        params = []
        for row in rows:
            values = list(row)
            for i, adapt in adapted:
                values[i] = adapt(values[i])
            params.append(values)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})",
            params,
        )
    return len(rows)


def _sqlite_datetime_adapter() -> "Callable[[Any], Any]":
    """What Django's SQLite backend makes of a datetime (naive text in the connection's
    time zone), with the common case of an aware datetime done directly."""
    adapt = connection.ops.adapt_datetimefield_value
    if not settings.USE_TZ:
        return adapt
    zone = connection.timezone

    def adapted(value: Any) -> Any:
        if type(value) is datetime and value.utcoffset() is not None:
            return str(value.astimezone(zone).replace(tzinfo=None))
        return adapt(value)

    return adapted


# COPY's text format: a backslash starts an escape, tabs separate columns, newlines rows.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, date):  # datetimes too: with their offset, as psycopg sends them
        return value.isoformat()
    if isinstance(value, int):
        return int.__repr__(value)  # the number, also for an IntegerChoices member
    if isinstance(value, float):
        # The shortest text that reads back as the same double; zero without a sign, as an
        # INSERT stores it (psycopg writes -0.0 as an expression whose value is 0).
        return float.__repr__(value) if value else "0"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    raise TypeError(f"COPY cannot write {type(value).__name__} values here.")


def _adapter(field: "Field[Any, Any]") -> "Callable[[Any], Any]":
    internal = field.get_internal_type()
    if internal == "JSONField":
        return _json
    if internal == "DateTimeField":
        return connection.ops.adapt_datetimefield_value
    return lambda value: value


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
