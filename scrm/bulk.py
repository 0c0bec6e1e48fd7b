"""Updating many rows with different values each, in one statement.

Django's ``bulk_update`` writes ``CASE WHEN pk=… THEN …`` per row and per field; building those
expressions costs far more than running the query (most of the ingest pipeline's time went
there). ``rows_update`` sends the values instead: ``UPDATE … FROM (VALUES …)`` on PostgreSQL,
and a prepared statement executed per row on SQLite, where statements run in-process.

``rows_copy`` inserts many rows with PostgreSQL's ``COPY``, a few times faster than a
multi-row ``INSERT`` (which the server must parse, and psycopg quote value by value); on SQLite
with one prepared statement run per row. Its text is written as it is sent, so the server is
storing rows while this process writes the next ones. ``rows_insert_returning`` goes by COPY
too when only the new keys are wanted back, taking them from the sequence first.
"""

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from datetime import date, datetime
from typing import Any, Literal, cast

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections
from django.db.models import Field, Model

Combine = Literal["set", "greatest"]


def rows_update(
    model: type[Model],
    rows: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    *,
    combine: Mapping[str, Combine] | None = None,
) -> int:
    """Set ``fields`` of each row identified by its ``"pk"`` key: ``rows_set`` for rows given
    as mappings. Returns rows sent."""
    return rows_set(
        model,
        fields,
        [(row["pk"], *(row[name] for name in fields)) for row in rows],
        combine=combine,
    )


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
    values_of = _values_adapter(model_fields)
    quote = connection.ops.quote_name  # each read of ``connection`` goes through a proxy
    table = quote(meta.db_table)
    columns = ", ".join(quote(str(f.column)) for f in model_fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    # As many rows a statement as the database's bound-parameter cap lets in.
    per_statement = max(1, _max_params() // len(fields))
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholder] * len(chunk))}"
                + conflict,
                [value for row in chunk for value in values_of(row)],
            )
    return len(rows)


def id_rows_insert(
    model: type[Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[int]],
    *,
    ignore_conflicts: bool = False,
) -> int:
    """``rows_insert`` for rows of whole numbers (ids), sent as one JSON array parameter and
    read by ``json_each`` on SQLite, ``jsonb_array_elements`` on PostgreSQL: the statement's
    text is the same for any number of rows (SQLite prepares it once), and neither driver
    quotes a parameter per value, which on PostgreSQL costs more than the row itself."""
    if not rows:
        return 0
    meta = model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(quote(str(cast(Field, meta.get_field(name)).column)) for name in fields)
    vendor = connection.vendor
    if vendor == "sqlite":
        values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(fields)))
        # SQLite needs a WHERE before ON CONFLICT to tell it from a join's ON.
        source = "json_each(%s) WHERE true"
    elif vendor == "postgresql":
        values = ", ".join(f"(value ->> {i})::bigint" for i in range(len(fields)))
        source = "jsonb_array_elements(%s::jsonb)"
    else:
        return rows_insert(model, fields, rows, ignore_conflicts=ignore_conflicts)
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {values} FROM {source}{conflict}",
            [json_text(rows)],
        )
    return len(rows)


def id_rows_copy(model: type[Model], fields: Sequence[str], rows: Sequence[Sequence[int]]) -> int:
    """``id_rows_insert`` for rows that cannot be there yet (their parent row is the
    transaction's own): ``COPY`` on PostgreSQL, which with no conflict to look for costs about
    40% less than ``INSERT … ON CONFLICT``; elsewhere the INSERT, which costs the same either way
    on SQLite."""
    if connection.vendor == "postgresql":
        return rows_copy(model, fields, rows)
    return id_rows_insert(model, fields, rows)


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
        values: Iterable[Sequence[Any]] = rows
        if any(is_json):
            values = (
                [
                    json_value_text(value) if j else value
                    for j, value in zip(is_json, row, strict=True)
                ]
                for row in rows
            )
        lines = ("\t".join(map(_copy_text, row)) + "\n" for row in values)

        def copy(sql: str, params: object, many: bool, context: object) -> None:
            reader = _CopyText(lines)
            try:
                with connection.wrap_database_errors:
                    raw.copy_expert(sql, reader, size=COPY_CHUNK)
            except DatabaseError:
                # A row that could not be written, mid-way, ended the COPY: its own error,
                # not the database's, is what the caller must see.
                if reader.failure is not None:
                    raise reader.failure from None
                raise

        # Through the connection's execute wrappers and, when queries are logged, into the
        # log: the statement counts and is timed like any other.
        sql = f"COPY {table} ({columns}) FROM STDIN"
        logged = getattr(cursor, "debug_sql", None)
        with logged(sql) if logged is not None else nullcontext():
            cursor._execute_with_wrappers(sql, None, False, copy)
    return len(rows)


# Characters of COPY text sent at a time. The rows are written out as they are sent, so the
# server stores the rows of one chunk while this process writes the next: the two overlap.
COPY_CHUNK = 32_768


class _CopyText:
    """COPY's text, read as a file: its lines joined into chunks of about ``size``
    characters, written when asked for rather than all before the first is sent."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.failure: Exception | None = None  # what writing a line raised, if anything

    def read(self, size: int = -1) -> str:
        chunk: list[str] = []
        length = 0
        try:
            for line in self._lines:
                chunk.append(line)
                length += len(line)
                if 0 <= size <= length:
                    break
        except Exception as exc:
            self.failure = exc
            raise
        return "".join(chunk)


def _sqlite_insert(model: type[Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """One prepared INSERT run per row: SQLite runs in-process, so a statement per row costs
    less than building, converting and compiling long multi-row ones."""
    meta = model._meta
    model_fields = [cast(Field, meta.get_field(name)) for name in fields]
    table = connection.ops.quote_name(meta.db_table)
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in model_fields)
    values_of = _values_adapter(model_fields)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})",
            [values_of(row) for row in rows],
        )
    return len(rows)


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
        return _iso_text(value) if type(value) is datetime else value.isoformat()
    if isinstance(value, int):
        return int.__repr__(value)  # the number, also for an IntegerChoices member
    if isinstance(value, float):
        # The shortest text that reads back as the same double; zero without a sign, as an
        # INSERT stores it (psycopg writes -0.0 as an expression whose value is 0).
        return float.__repr__(value) if value else "0"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    raise TypeError(f"COPY cannot write {type(value).__name__} values here.")


Adapter = Callable[[Any], Any]


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


def _adapter(field: "Field[Any, Any]") -> Adapter | None:
    """What a value of the field needs before it is a parameter: None for the plain types,
    JSON text, the backend's form of a time, and Django's own preparation for anything else."""
    internal = field.get_internal_type()
    if internal in _PLAIN:
        return None
    if internal == "JSONField":
        return json_value_text
    if internal == "DateTimeField":
        return _datetime_adapter()

    def prepare(value: Any) -> Any:
        return field.get_db_prep_value(value, connection)

    if internal == "DateField":
        # PostgreSQL's driver adapts dates itself; SQLite stores ISO text.
        if connection.vendor == "postgresql":
            return None
        return lambda value: value.isoformat() if type(value) is date else prepare(value)
    return prepare


# Times adapted to SQLite's text, per time zone: bounded, cleared when full.
_adapted_times: dict[Any, dict[Any, Any]] = {}
_ADAPTED_TIMES_KEPT = 20_000


def _datetime_adapter() -> Adapter | None:
    """What the backend does to a datetime parameter, without its per-call overhead,
    remembered per value across inserts, since the rows of one batch share most of their
    times (a message's, its conversation's, its timeline entries').

    PostgreSQL: an aware datetime as its ISO text with its offset, what psycopg2 sends for it
    but for the cast (every statement here either casts its parameters or inserts them into
    the column, which reads the text as the column's type); psycopg2 formats each datetime
    anew, at a cost above most rows' other values together. SQLite stores text: the instant
    in the connection's time zone (UTC unless the database's settings say otherwise), as
    Django's ``adapt_datetimefield_value`` writes it."""
    database = connections[DEFAULT_DB_ALIAS]  # ``connection``, read through its proxy once
    if database.vendor == "postgresql":
        return _iso_text
    adapt = database.ops.adapt_datetimefield_value
    if database.vendor != "sqlite" or not settings.USE_TZ:
        return adapt
    zone = database.timezone
    adapted = _adapted_times.setdefault(zone, {})
    if len(adapted) > _ADAPTED_TIMES_KEPT:
        adapted.clear()

    def as_text(value: Any) -> Any:
        text = adapted.get(value)
        if text is None:
            if type(value) is datetime and value.utcoffset() is not None:
                text = value.astimezone(zone).replace(tzinfo=None).isoformat(" ")
            else:
                text = adapt(value)
            if text is not None:
                adapted[value] = text
        return text

    return as_text


_iso_texts: dict[Any, str] = {}


def _iso_text(value: Any) -> Any:
    """A datetime's ISO text (with its offset when it has one), remembered (bounded);
    anything else as it is."""
    text = _iso_texts.get(value)
    if text is None:
        if type(value) is not datetime:
            return value
        if len(_iso_texts) > _ADAPTED_TIMES_KEPT:
            _iso_texts.clear()
        text = _iso_texts[value] = value.isoformat()
    return text


# What ``json.dumps(value, check_circular=False)`` writes, from an encoder built once:
# ``json.dumps`` builds a new one per call, which costs more than encoding a small value.
_ENCODE: Callable[[Any, int], Sequence[str]] | None = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, None, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)


def json_text(value: Any) -> str:
    """``json.dumps(value)`` for values of the plain JSON types; TypeError for others."""
    return "".join(_ENCODE(value, 0)) if _ENCODE is not None else json.dumps(value)


class EncodedJSON:
    """A value of a JSON field that encodes itself (``json_text``), given to the bulk inserts
    in place of the value: for values built from parts that are encoded once and reused."""

    __slots__ = ()

    def json_text(self) -> str:
        raise NotImplementedError


def json_value_text(value: Any) -> str:
    """JSON text a database accepts: PostgreSQL refuses the NUL character in JSON."""
    if isinstance(value, EncodedJSON):
        text = value.json_text()
    else:
        try:
            text = json_text(value)  # a Decimal or a time raises TypeError: written below
        except TypeError:
            text = json.dumps(value, cls=DjangoJSONEncoder)
    if "\\u0000" in text:  # rare: clean the value itself rather than patching escaped text
        text = json.dumps(_without_nul(json.loads(text)))
    return text


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def where_in(column: str, values: Collection[int | str]) -> tuple[str, list[Any]]:
    """``column IN (…)`` of numbers or strings as SQL and parameters: one parameter whatever
    the number of values, so the statement's text is the same for any list (SQLite then
    prepares it once, and neither driver rewrites a placeholder per value): an array on
    PostgreSQL, a JSON array read by ``json_each`` on SQLite. Whole numbers go to PostgreSQL
    as the text of an array: psycopg2 would quote a list's numbers one by one, which for the
    hundreds of ids of a batch costs more than the query."""
    if connection.vendor == "postgresql":
        if all(type(value) is int for value in values):
            return f"{column} = ANY(%s::bigint[])", ["{" + ",".join(map(str, values)) + "}"]
        return f"{column} = ANY(%s)", [list(values)]
    if connection.vendor == "sqlite":
        return f"{column} IN (SELECT value FROM json_each(%s))", [json.dumps(list(values))]
    if not values:
        return "1 = 0", []
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def rows_insert_returning(
    model: type[Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    returning: Sequence[str] = ("pk",),
    ignore_conflicts: bool = False,
    by_copy: bool = True,
) -> list[tuple[Any, ...]]:
    """``rows_insert`` that gives back the ``returning`` fields of the rows it inserted, read
    as a query would read them, in the order of ``rows`` (the order Django's ``bulk_create``
    relies on too). With ``ignore_conflicts`` a row that breaks a unique constraint is left
    out, and so is its result: callers match results by a key they returned.

    Rows that want only their keys back go in on PostgreSQL by ``rows_copy``, the keys taken
    from the table's sequence beforehand: two statements, but the server stores the rows while
    they are being written, which an INSERT's parameters do not allow. For a handful of rows
    the one INSERT would cost about 0.1 ms less (on the same host; the two break even near 25
    rows of a contact's width); one way for any number keeps a batch's statements fixed.
    ``by_copy=False`` is for callers whose rows are a handful as a rule: one INSERT."""
    if not rows:
        return []
    meta = model._meta
    model_fields = [cast(Field, meta.get_field(name)) for name in fields]
    if (
        by_copy
        and tuple(returning) == ("pk",)
        and not ignore_conflicts
        and _copies(model, model_fields)
    ):
        keys = _keys_taken(model, len(rows))
        key = cast(Field, meta.pk).attname
        rows_copy(model, [key, *fields], [(pk, *row) for pk, row in zip(keys, rows, strict=True)])
        return [(pk,) for pk in keys]
    values_of = _values_adapter(model_fields)
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(quote(str(f.column)) for f in model_fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    returned = [_field(model, name) for name in returning]
    returned_columns = ", ".join(quote(str(f.column)) for f in returned)
    conflicts = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    per_statement = max(1, _max_params() // len(fields))
    results: list[tuple[Any, ...]] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = [value for row in chunk for value in values_of(row)]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholder] * len(chunk))}"
                f"{conflicts} RETURNING {returned_columns}",
                params,
            )
            results.extend(cursor.fetchall())
    return _converted(model, returned, results)


def rows_select(
    model: type[Model],
    fields: Sequence[str],
    *,
    where: str,
    params: Sequence[Any],
    extra: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Value tuples of ``fields`` (read as a query would read them) of the rows matching
    ``where``, an SQL condition on the model's table; ``extra`` SQL expressions follow, as the
    database gives them. For hot paths where compiling a queryset costs more than running it."""
    meta = model._meta
    selected = [_field(model, name) for name in fields]
    quote = connection.ops.quote_name
    columns = [quote(str(f.column)) for f in selected]
    table = quote(meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join([*columns, *extra])} FROM {table} WHERE {where}", params)
        results = cursor.fetchall()
    return _converted(model, selected, results)


def rows_set(
    model: type[Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    combine: Mapping[str, Combine] | None = None,
) -> int:
    """``rows_update`` for rows given as ``(pk, *values)`` tuples in ``fields`` order, with
    values adapted as ``rows_insert`` adapts them rather than through each field. When every
    field keeps the greater value, rows where none would grow are left unwritten (no row
    version, no trigger, no lock held longer than the read). Returns rows sent."""
    if not rows:
        return 0
    combine = combine or {}
    meta = model._meta
    table = connection.ops.quote_name(meta.db_table)
    pk_field = meta.pk
    assert pk_field is not None
    pk_column = connection.ops.quote_name(str(pk_field.column))
    model_fields = [cast(Field, meta.get_field(name)) for name in fields]
    values_of = _values_adapter(model_fields)
    columns = [connection.ops.quote_name(str(f.column)) for f in model_fields]
    only_growing = all(combine.get(name) == "greatest" for name in fields)
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"

    def assignment(name: str, column: str, source: str) -> str:
        if combine.get(name) == "greatest":
            return f"{column} = {greatest}({table}.{column}, {source})"
        return f"{column} = {source}"

    def grows(column: str, source: str) -> str:
        return f"({table}.{column} IS NULL OR {table}.{column} < {source})"

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            types = [pk_field.db_type(connection)] + [f.db_type(connection) for f in model_fields]
            placeholder = "(" + ", ".join(f"%s::{t}" for t in types) + ")"
            aliases = ", ".join(["pk", *(f"v{i}" for i in range(len(fields)))])
            sources = [f"v.v{i}" for i in range(len(fields))]
            sets = ", ".join(
                assignment(name, column, source)
                for name, column, source in zip(fields, columns, sources, strict=True)
            )
            condition = f"{table}.{pk_column} = v.pk"
            if only_growing:
                growth = " OR ".join(map(grows, columns, sources))
                condition += f" AND ({growth})"
            sql = (
                f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([placeholder] * len(rows))})"
                f" AS v({aliases}) WHERE {condition}"
            )
            params = []
            for pk, *values in rows:
                params.append(pk)
                params.extend(values_of(values))
            cursor.execute(sql, params)
        else:
            sets = ", ".join(
                assignment(name, column, "%s") for name, column in zip(fields, columns, strict=True)
            )
            condition = f"{pk_column} = %s"
            if only_growing:
                growth = " OR ".join(grows(column, "%s") for column in columns)
                condition += f" AND ({growth})"
            sql = f"UPDATE {table} SET {sets} WHERE {condition}"
            batch = []
            for pk, *values in rows:
                adapted = values_of(values)
                batch.append([*adapted, pk, *adapted] if only_growing else [*adapted, pk])
            cursor.executemany(sql, batch)
    return len(rows)


def sql_in(column: str, count: int) -> str:
    """``column IN (%s, …)`` for ``count`` values (``count`` must be positive)."""
    return f"{column} IN ({', '.join(['%s'] * count)})"


def _values_adapter(
    fields: "Sequence[Field[Any, Any]]",
) -> "Callable[[Sequence[Any]], list[Any]]":
    """What turns a row's values into parameters, as ``_adapter`` would, touching only the
    values that need it. Times are remembered: rows of one batch share most of them (when
    it was written, a first post also being the last), and on SQLite adapting one costs more
    than the rest of the row."""
    steps = [(index, adapt) for index, field in enumerate(fields) if (adapt := _adapter(field))]
    width = len(fields)

    def values_of(row: Sequence[Any]) -> list[Any]:
        if len(row) != width:
            raise ValueError(f"{len(row)} values for {width} fields")
        values = list(row)
        for index, adapt in steps:
            values[index] = adapt(values[index])
        return values

    return values_of


# Fields whose values read from the database are immutable, so one may stand for all equal ones.
_IMMUTABLE_VALUES = {"DateTimeField", "DateField", "TimeField", "BooleanField"}


def _field(model: type[Model], name: str) -> "Field[Any, Any]":
    meta = model._meta
    if name == "pk":
        assert meta.pk is not None
        return cast(Field, meta.pk)
    return cast(Field, meta.get_field(name))


def _converted(
    model: type[Model], fields: "Sequence[Field[Any, Any]]", results: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Rows as the ORM would read them: the backend's and the fields' converters applied."""
    table = model._meta.db_table
    steps: list[tuple[int, Any, list[Any], dict[Any, Any] | None]] = []
    for index, field in enumerate(fields):
        column = field.get_col(table)
        converters = [
            *connection.ops.get_db_converters(column),
            *field.get_db_converters(connection),
        ]
        if converters:
            remember = field.get_internal_type() in _IMMUTABLE_VALUES
            steps.append((index, column, converters, {} if remember else None))
    if not steps or not results:
        return results
    converted = []
    for result in results:
        row = list(result)
        for index, column, converters, seen in steps:
            raw = value = row[index]
            if seen is not None and raw in seen:
                row[index] = seen[raw]
                continue
            for convert in converters:
                value = convert(value, column, connection)
            if seen is not None:
                seen[raw] = value
            row[index] = value
        converted.append(tuple(row))
    return converted


def _max_params() -> int:
    """Bound parameters one statement may take: SQLite's limit as this build sets it (often
    far above Django's conservative 999); PostgreSQL's protocol caps them at 65535."""
    if connection.vendor != "sqlite":
        return 65535
    connection.ensure_connection()
    getlimit = getattr(connection.connection, "getlimit", None)
    if getlimit is None:  # Python < 3.11
        return 999
    return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def instances_insert(model: type[Model], instances: Sequence[Model]) -> None:
    """Insert model instances built in memory and give each its primary key, as ``bulk_create``
    does (``auto_now`` and ``auto_now_add`` times included), without compiling each value
    through its field: ``rows_insert_returning`` with every concrete column but the key."""
    if not instances:
        return
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    stamped = [
        f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    names = [f.attname for f in fields]
    for instance in instances:
        for field in stamped:
            field.pre_save(instance, True)
    keys = rows_insert_returning(
        model, names, [tuple(getattr(i, name) for name in names) for i in instances]
    )
    alias = connection.alias  # read through the connection proxy once, not per instance
    for instance, (pk,) in zip(instances, keys, strict=True):
        instance.pk = pk
        instance._state.adding = False
        instance._state.db = alias


# What COPY's text writes as PostgreSQL reads it back: the plain types, times and JSON.
_COPIED = _PLAIN | {"DateTimeField", "DateField", "JSONField"}


_SEQUENCED = frozenset({"AutoField", "BigAutoField", "SmallAutoField"})


def _copies(model: type[Model], fields: "Sequence[Field[Any, Any]]") -> bool:
    """Whether rows of these fields go in by COPY, their keys taken from the sequence first:
    on PostgreSQL the server then stores the rows as they arrive while this process writes
    the next ones, where an INSERT's rows must all be written before it starts. Only for
    keys a sequence gives."""
    pk = model._meta.pk
    return (
        connection.vendor == "postgresql"
        and pk is not None
        and pk.get_internal_type() in _SEQUENCED
        and all(f.get_internal_type() in _COPIED for f in fields)
    )


def _keys_taken(model: type[Model], count: int) -> list[int]:
    """``count`` new primary keys of the model's table, taken from its sequence (as an INSERT
    would take them), in one query."""
    meta = model._meta
    assert meta.pk is not None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            # The table's name is read as SQL reads a name (folded to lower case unless
            # quoted), the column's as it is.
            [connection.ops.quote_name(meta.db_table), meta.pk.column, count],
        )
        return [pk for (pk,) in cursor.fetchall()]
