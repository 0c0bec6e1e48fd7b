"""Writes to contacts and their social identities."""

import csv
import io
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.validators import URLValidator, validate_email
from django.db import connection, transaction
from django.db.models import CharField, Count, Q
from django.db.models.functions import Lower
from django.utils import timezone

from channels_ingest.platforms import Platform
from channels_ingest.types import InboundAuthor
from contacts.models import (
    Contact,
    ContactImport,
    ContactImportStatus,
    ContactMerge,
    ContactSource,
    IdentityMove,
    MergeSuggestion,
    MergeSuggestionStatus,
    SocialIdentity,
)
from contacts.selectors import CSV_COLUMNS, FORMULA_TRIGGERS, contacts_visible_to
from conversations.models import Conversation
from governance.audit import audit_record
from scrm.bulk import rows_insert_returning, rows_select, rows_set, sql_in

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

_PROFILE_FIELDS = ("handle", "display_name", "profile_url", "followers_count", "verified")
# Every column of an identity, in the model's order, so rows become instances positionally.
_IDENTITY_FIELDS = ("pk", "contact", "platform", "platform_user_id", *_PROFILE_FIELDS)
_IDENTITY_TIMES = ("created_at", "updated_at")
# Positions in those rows.
_USER_ID, _CONTACT = 3, 1
_PROFILE_AT = _IDENTITY_FIELDS.index("handle")
_PROFILE_END = _PROFILE_AT + len(_PROFILE_FIELDS)
_UPDATED_AT = len(_IDENTITY_FIELDS) + 1
_NEW_CONTACT_FIELDS = (
    "name",
    "email",
    "phone",
    "company",
    "is_vip",
    "attributes",
    "external_crm_id",
    "external_crm_url",
    "first_seen_at",
    "last_seen_at",
    "source",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True, slots=True)
class SeenAuthor:
    """An author as seen in one batch: their latest profile and the span of their posts."""

    author: InboundAuthor
    first_seen_at: datetime
    last_seen_at: datetime


def identities_resolve(
    *, platform: str, authors: Sequence[SeenAuthor]
) -> dict[str, SocialIdentity]:
    """Find or create the identity (and contact) of every author, in a fixed number of queries.

    A new identity joins an existing contact only on a reliable match (same email or phone);
    otherwise it gets a contact of its own. Profile fields are refreshed when they changed, and
    each contact's last-seen time moves forward. Returns identities by platform user id.

    Rows are read and written as plain values (``scrm.bulk``): compiling querysets and building
    model instances for thousands of authors per batch cost more than the queries themselves.
    """
    if not authors:
        return {}
    by_user_id = {seen.author.platform_user_id: seen for seen in authors}
    now = timezone.now()
    known = _identity_rows(platform, list(by_user_id))
    changed = _profiles_refresh(known, by_user_id, now)
    if changed:
        # Sorted, so two batches writing the same rows take their locks in the same order.
        rows_set(SocialIdentity, [*_PROFILE_FIELDS, "updated_at"], sorted(changed))
    identities = {row[_USER_ID]: row for row in known}

    new = [by_user_id[u] for u in sorted(by_user_id) if u not in identities]
    created_contacts: set[int] = set()
    if new:
        created, created_contacts = _create_identities(platform, new, now)
        identities.update(created)
        _handle_suggestions_find(
            [(platform, row[_CONTACT], row[_PROFILE_AT]) for row in created.values()]
        )

    # Contacts made in this batch were inserted with their last-seen time already.
    latest: dict[int, datetime] = {}
    for user_id, row in identities.items():
        contact_id = row[_CONTACT]
        if contact_id in created_contacts:
            continue
        seen_at = by_user_id[user_id].last_seen_at
        if contact_id not in latest or latest[contact_id] < seen_at:
            latest[contact_id] = seen_at
    rows_set(
        Contact,
        ["last_seen_at"],
        sorted(latest.items()),
        combine={"last_seen_at": "greatest"},
    )
    names = _identity_attnames()
    alias = connection.alias  # read through the connection proxy once, not per identity
    return {
        user_id: SocialIdentity.from_db(alias, names, row) for user_id, row in identities.items()
    }


def _identity_attnames() -> list[str]:
    return [f.attname for f in SocialIdentity._meta.concrete_fields]


def _identity_rows(platform: str, user_ids: list[str]) -> list[list[Any]]:
    """Stored identities of these platform users, as lists of every column in model order."""
    quote = connection.ops.quote_name
    rows = rows_select(
        SocialIdentity,
        [*_IDENTITY_FIELDS, *_IDENTITY_TIMES],
        where=f"{quote('platform')} = %s AND {sql_in(quote('platform_user_id'), len(user_ids))}",
        params=[platform, *user_ids],
    )
    return [list(row) for row in rows]


def _profiles_refresh(
    known: list[list[Any]], by_user_id: dict[str, SeenAuthor], now: datetime
) -> list[tuple[Any, ...]]:
    """Apply each author's latest profile to their identity row; the ``(pk, *profile,
    updated_at)`` tuples of rows that changed."""
    changed = []
    for row in known:
        author = by_user_id[row[_USER_ID]].author
        dirty = False
        for offset, name in enumerate(_PROFILE_FIELDS, start=_PROFILE_AT):
            value = getattr(author, name)
            # An empty value in one payload does not erase what another payload told us.
            if value not in ("", None) and row[offset] != value:
                row[offset] = value
                dirty = True
        if dirty:
            row[_UPDATED_AT] = now
            changed.append((row[0], *row[_PROFILE_AT:_PROFILE_END], now))
    return changed


def _create_identities(
    platform: str, new: list[SeenAuthor], now: datetime
) -> tuple[dict[str, list[Any]], set[int]]:
    """Identity rows for new authors, and the ids of the contacts created for them."""
    emails = {seen.author.email.lower() for seen in new if seen.author.email}
    phones = {seen.author.phone for seen in new if seen.author.phone}
    known: dict[str, int] = {}
    if emails or phones:
        matches = []
        if emails:
            matches.append(sql_in(f"LOWER({connection.ops.quote_name('email')})", len(emails)))
        if phones:
            matches.append(sql_in(connection.ops.quote_name("phone"), len(phones)))
        # A contact merged into another is hidden and keeps its old details: never a match.
        # Of two that match, the oldest is the one the customer has been known by longest.
        merged = connection.ops.quote_name("merged_into_id")
        for contact_id, email, phone in sorted(
            rows_select(
                Contact,
                ["pk", "email", "phone"],
                where=f"{merged} IS NULL AND ({' OR '.join(matches)})",
                params=[*emails, *phones],
            )
        ):
            if email:
                known.setdefault(email.lower(), contact_id)
            if phone:
                known.setdefault(phone, contact_id)

    owner: dict[str, int] = {}
    to_create: list[SeenAuthor] = []
    for seen in new:
        author = seen.author
        match = known.get(author.email.lower()) or known.get(author.phone)
        if match:
            owner[author.platform_user_id] = match
        else:
            to_create.append(seen)
    contact_rows: list[tuple[Any, ...]] = [
        (
            seen.author.display_name or seen.author.handle,
            seen.author.email,
            seen.author.phone,
            "",
            False,
            {},
            "",
            "",
            seen.first_seen_at,
            seen.last_seen_at,
            ContactSource.SOCIAL,
            now,
            now,
        )
        for seen in to_create
    ]
    contact_ids = [
        pk for (pk,) in rows_insert_returning(Contact, _NEW_CONTACT_FIELDS, contact_rows)
    ]
    made: dict[str, int] = {}
    for seen, contact_id in zip(to_create, contact_ids, strict=True):
        owner[seen.author.platform_user_id] = made[seen.author.platform_user_id] = contact_id

    identity_rows = {
        seen.author.platform_user_id: [
            None,
            owner[seen.author.platform_user_id],
            platform,
            seen.author.platform_user_id,
            *_profile(seen.author),
            now,
            now,
        ]
        for seen in new
    }
    # Another batch of another channel of this platform may have created some meanwhile.
    inserted = rows_insert_returning(
        SocialIdentity,
        _IDENTITY_FIELDS[1:] + _IDENTITY_TIMES,
        [row[1:] for row in identity_rows.values()],
        returning=("pk", "platform_user_id"),
        ignore_conflicts=True,
    )
    for pk, user_id in inserted:
        identity_rows[user_id][0] = pk
    if len(inserted) < len(identity_rows):
        lost = [user_id for user_id, row in identity_rows.items() if row[0] is None]
        for row in _identity_rows(platform, lost):
            identity_rows[row[_USER_ID]] = row
        if missing := [user_id for user_id, row in identity_rows.items() if row[0] is None]:
            # Created meanwhile and gone already: let the batch fail and be retried.
            raise LookupError(f"Identities neither inserted nor found: {missing[:5]}")
    # Contacts made for identities that lost such a race hold nothing: remove them.
    orphans = [pk for user_id, pk in made.items() if identity_rows[user_id][_CONTACT] != pk]
    if orphans:
        Contact.objects.filter(pk__in=orphans).delete()
    kept = {user_id: pk for user_id, pk in made.items() if pk not in orphans}
    _contacts_created_publish(
        kept, by_user_id={seen.author.platform_user_id: seen for seen in to_create}, now=now
    )
    return identity_rows, set(kept.values())


def _profile(author: InboundAuthor) -> list[Any]:
    """Profile values of a new identity, in ``_PROFILE_FIELDS`` order; missing ones default."""
    return [
        value if value is not None else default
        for value, default in (
            (author.handle, ""),
            (author.display_name, ""),
            (author.profile_url, ""),
            (author.followers_count, None),
            (author.verified, False),
        )
    ]


def _contacts_created_publish(
    kept: dict[str, int], *, by_user_id: dict[str, SeenAuthor], now: datetime
) -> None:
    """``contact.created`` for contacts ingestion made; instances only built when subscribed."""
    from conversations.webhook_events import webhook_subscribed

    if not kept or not webhook_subscribed("contact.created"):
        return
    contacts = []
    for user_id, pk in kept.items():
        seen = by_user_id[user_id]
        contact = Contact(
            pk=pk,
            name=seen.author.display_name or seen.author.handle,
            email=seen.author.email,
            phone=seen.author.phone,
            first_seen_at=seen.first_seen_at,
            last_seen_at=seen.last_seen_at,
            created_at=now,
            updated_at=now,
        )
        contact._state.adding = False
        contact._state.db = connection.alias
        contacts.append(contact)
    contacts_created_publish(contacts=contacts)


# Handles shorter than this are too common to say anything about who is behind them.
_MIN_HANDLE_FOR_MATCH = 4


def merge_suggestions_find(*, identities: list[SocialIdentity]) -> int:
    """Suggest merging contacts whose identities share a handle across platforms. One query
    to find them and one to store the pairs, whatever the number of identities."""
    return _handle_suggestions_find([(i.platform, i.contact_id, i.handle) for i in identities])


def _handle_suggestions_find(identities: list[tuple[str, int, str]]) -> int:
    """``merge_suggestions_find`` for ``(platform, contact_id, handle)`` tuples."""
    by_handle: dict[str, list[tuple[str, int, str]]] = {}
    for identity in identities:
        handle = identity[2].strip().lstrip("@").lower()
        if len(handle) >= _MIN_HANDLE_FOR_MATCH:
            by_handle.setdefault(handle, []).append(identity)
    if not by_handle:
        return 0
    quote = connection.ops.quote_name
    where = sql_in(f"LOWER({quote('handle')})", len(by_handle))
    params: list[Any] = list(by_handle)
    platforms = {platform for platform, _, _ in identities}
    if len(platforms) == 1:
        # Only other platforms' identities can be suggested: leave the rest in the database.
        where += f" AND {quote('platform')} <> %s"
        params.append(next(iter(platforms)))
    labels = dict(Platform.choices)
    pairs: dict[tuple[int, int], str] = {}
    for other_platform, other_contact, other_handle, lower_handle in rows_select(
        SocialIdentity,
        ["platform", "contact", "handle"],
        where=where,
        params=params,
        extra=[f"LOWER({quote('handle')})"],
    ):
        for platform, contact_id, _ in by_handle[lower_handle]:
            if other_platform == platform or other_contact == contact_id:
                continue
            low, high = sorted((contact_id, other_contact))
            pairs[(low, high)] = (
                f"Same handle @{other_handle} on {labels.get(other_platform, other_platform)} "
                f"and {labels.get(platform, platform)}"
            )
    MergeSuggestion.objects.bulk_create(
        [MergeSuggestion(contact_id=a, other_id=b, reason=r) for (a, b), r in pairs.items()],
        ignore_conflicts=True,
    )
    return len(pairs)


def _person_key(name: str, company: str) -> tuple[str, str] | None:
    """Name and company as compared: case and spacing ignored; both must be there."""
    name, company = " ".join(name.split()).lower(), " ".join(company.split()).lower()
    return (name, company) if len(name) >= _MIN_NAME_FOR_MATCH and company else None


_MIN_NAME_FOR_MATCH = 5  # "Jo" at Acme is too common to suggest anything


def merge_suggestions_by_name_and_company(*, contacts: Sequence[Contact]) -> int:
    """Suggest merging contacts with the same name at the same company (across platforms, or
    a customer entered by hand and met on social). One query to find them, one to store."""
    keys = {
        key: contact
        for contact in contacts
        if contact.merged_into_id is None and (key := _person_key(contact.name, contact.company))
    }
    if not keys:
        return 0
    # Names are compared in Python, where spacing can be ignored too: a company has few
    # contacts next to all of them.
    candidates = Contact.objects.annotate(company_lower=Lower("company")).filter(
        merged_into__isnull=True, company_lower__in={company for _, company in keys}
    )
    pairs: dict[tuple[int, int], str] = {}
    for other in candidates.only("pk", "name", "company"):
        key = _person_key(other.name, other.company)
        contact = keys.get(key) if key else None
        if contact is None or contact.pk == other.pk:
            continue
        low, high = sorted((contact.pk, other.pk))
        pairs[(low, high)] = f"Same name and company: {other.name} at {other.company}"[:200]
    MergeSuggestion.objects.bulk_create(
        [MergeSuggestion(contact_id=a, other_id=b, reason=r) for (a, b), r in pairs.items()],
        ignore_conflicts=True,
    )
    return len(pairs)


# --- Contacts entered by hand ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactData:
    """What a person may set on a contact; the rest comes from the channels."""

    name: str = ""
    email: str = ""
    phone: str = ""
    company: str = ""
    is_vip: bool = False
    external_crm_id: str = ""
    external_crm_url: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)


_EDITABLE_FIELDS = tuple(f.name for f in fields(ContactData))


def _publish(event: str, key: str, contacts: dict[str, Contact]) -> None:
    from conversations.webhook_events import (
        contact_payload,
        webhook_event_publish,
        webhook_subscribed,
    )

    if webhook_subscribed(event):
        data = {name: contact_payload(contact) for name, contact in contacts.items()}
        webhook_event_publish(event=event, items=[(key, data)])


def contacts_created_publish(*, contacts: Sequence[Contact]) -> int:
    """``contact.created`` for contacts made in bulk (ingestion, imports): a fixed number of
    queries whatever their number, and none while nobody subscribes."""
    from conversations.webhook_events import (
        contact_payload,
        webhook_event_publish,
        webhook_subscribed,
    )

    if not contacts or not webhook_subscribed("contact.created"):
        return 0
    return webhook_event_publish(
        event="contact.created",
        items=[(str(c.pk), {"contact": contact_payload(c)}) for c in contacts],
    )


def contact_create(*, data: ContactData, actor: User) -> Contact:
    """A contact added by hand. It came through no channel, so every team may see it."""
    now = timezone.now()
    contact = Contact(
        **{name: getattr(data, name) for name in _EDITABLE_FIELDS},
        source=ContactSource.MANUAL,
        created_by=actor,
        first_seen_at=now,
        last_seen_at=now,
    )
    contact.save()
    merge_suggestions_by_name_and_company(contacts=[contact])
    contacts_created_publish(contacts=[contact])
    return contact


def contact_update(*, contact: Contact, data: ContactData, actor: User) -> Contact:
    before = _person_key(contact.name, contact.company)
    for name in _EDITABLE_FIELDS:
        setattr(contact, name, getattr(data, name))
    contact.save(update_fields=[*_EDITABLE_FIELDS, "updated_at"])
    if _person_key(contact.name, contact.company) != before:
        merge_suggestions_by_name_and_company(contacts=[contact])
    return contact


# --- CSV import --------------------------------------------------------------------------

IMPORT_BATCH_SIZE = 500
# Large enough for a few hundred thousand contacts, small enough to hold in one request.
IMPORT_MAX_BYTES = 50 * 1024 * 1024
# A running import whose worker went quiet this long may be taken over by a redelivery.
IMPORT_STALE_AFTER = timedelta(minutes=10)

_IMPORTED_COLUMNS = (
    "id",
    "name",
    "email",
    "phone",
    "company",
    "vip",
    "external_crm_id",
    "external_crm_url",
    "attributes",
)
_MAX_LENGTHS: dict[str, int] = {
    f.name: f.max_length
    for f in Contact._meta.get_fields()
    if isinstance(f, CharField) and f.max_length and f.name in _IMPORTED_COLUMNS
}
_JSON_EXAMPLE = '{"plan": "gold"}'
_YES = {"yes", "y", "true", "1", "x", "vip"}
_NO = {"no", "n", "false", "0"}


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (its rows are never looked at)."""


@dataclass(frozen=True, slots=True)
class ImportFile:
    text: str
    delimiter: str
    ignored_columns: list[str]
    total_rows: int


def _column_name(heading: str) -> str:
    return re.sub(r"[\s-]+", "_", heading.strip().lower())


def _csv_reader(text: str, delimiter: str) -> "CsvReader":
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)


def import_file_read(*, raw: bytes) -> ImportFile:
    """Check an uploaded file's encoding and header and count its rows."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            "The file is not UTF-8 text. Save it from your spreadsheet as “CSV UTF-8”."
        ) from exc
    if "\x00" in text:
        raise ImportFileError("The file holds binary data, not CSV text.")
    first_line = text.split("\n", 1)[0]
    # Column names hold neither character, so the header alone tells which one separates.
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = _csv_reader(text, delimiter)
    try:
        header = [_column_name(h) for h in next(reader, [])]
        if not any(header):
            raise ImportFileError("The file is empty: it needs a header row, then contacts.")
        duplicates = sorted({name for name in header if name and header.count(name) > 1})
        if duplicates:
            raise ImportFileError(f"The header repeats columns: {', '.join(duplicates)}.")
        if not {"name", "email"} & set(header):
            raise ImportFileError(
                "The header row needs a “name” or an “email” column "
                f"(it has: {', '.join(h for h in header if h) or 'nothing'})."
            )
        total = sum(1 for record in reader if any(cell.strip() for cell in record))
    except csv.Error as exc:
        raise ImportFileError(f"The file is not valid CSV: {exc}.") from exc
    if not total:
        raise ImportFileError("The file has a header row but no contacts.")
    return ImportFile(
        text=text,
        delimiter=delimiter,
        ignored_columns=[h for h in header if h and h not in CSV_COLUMNS],
        total_rows=total,
    )


def import_upload_read(*, upload: UploadedFile) -> ImportFile:
    """``import_file_read`` of an uploaded file, refusing one too large to hold."""
    if upload.size is not None and upload.size > IMPORT_MAX_BYTES:
        raise ImportFileError(
            f"The file is larger than {IMPORT_MAX_BYTES // (1024 * 1024)} MB: split it."
        )
    return import_file_read(raw=upload.read())


def contact_import_create(*, file: ImportFile, file_name: str, actor: User) -> ContactImport:
    """Store an upload as a job; the caller enqueues ``contact_import_run`` after commit."""
    with transaction.atomic():
        job = ContactImport.objects.create(
            created_by=actor,
            file_name=file_name[:255],
            content=file.text,
            delimiter=file.delimiter,
            ignored_columns=file.ignored_columns,
            total_rows=file.total_rows,
        )
        audit_record(
            action="contacts.import_started",
            actor=actor,
            obj=job,
            file_name=job.file_name,
            rows=file.total_rows,
            ignored_columns=file.ignored_columns,
        )
    return job


@dataclass(slots=True)
class _Row:
    number: int
    values: dict[str, Any]
    errors: list[dict[str, Any]]


def _cell_unescape(value: str) -> str:
    """Undo the quote mark an export puts before cells a spreadsheet would run as formulas."""
    if value.startswith("'") and value[1:].startswith(FORMULA_TRIGGERS):
        return value[1:]
    return value


def _shown(value: str) -> str:
    return f"“{value[:60]}…”" if len(value) > 60 else f"“{value}”"


def _cell_parse(column: str, value: str) -> Any:
    """The value of one non-empty cell; raises ValueError with a message for the report."""
    if column in _MAX_LENGTHS and len(value) > _MAX_LENGTHS[column]:
        raise ValueError(f"Too long: at most {_MAX_LENGTHS[column]} characters.")
    if column == "id":
        if not value.isdigit():
            raise ValueError(f"{_shown(value)} is not a contact id (a whole number).")
        return int(value)
    if column == "email":
        try:
            validate_email(value)
        except ValidationError as exc:
            raise ValueError(f"{_shown(value)} is not a valid email address.") from exc
    elif column == "external_crm_url":
        try:
            URLValidator(schemes=["http", "https"])(value)
        except ValidationError as exc:
            raise ValueError(f"{_shown(value)} is not a web address (http or https).") from exc
    elif column == "vip":
        if value.lower() in _YES:
            return True
        if value.lower() in _NO:
            return False
        raise ValueError(f"{_shown(value)}: write yes or no.")
    elif column == "attributes":
        try:
            attributes = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Not valid JSON: write an object such as {_JSON_EXAMPLE}.") from exc
        if not isinstance(attributes, dict):
            raise ValueError(f"Write an object such as {_JSON_EXAMPLE}, not a list or a value.")
        return attributes
    return value


def _row_parse(number: int, header: list[str], record: list[str]) -> _Row:
    row = _Row(number=number, values={}, errors=[])
    if len(record) > len(header) and any(cell.strip() for cell in record[len(header) :]):
        row.errors.append(
            {
                "row": number,
                "column": "",
                "message": f"{len(record)} values but the header has {len(header)} columns.",
            }
        )
    for column, cell in zip(header, record, strict=False):
        value = _cell_unescape(cell.strip())
        if column not in _IMPORTED_COLUMNS or not value:
            continue
        try:
            row.values[column] = _cell_parse(column, value)
        except ValueError as exc:
            row.errors.append({"row": number, "column": column, "message": str(exc)})
    if not row.errors and not (row.values.get("name") or row.values.get("email")):
        row.errors.append(
            {"row": number, "column": "name", "message": "Give a name or an email address."}
        )
    return row


def _records(job: ContactImport) -> Iterator[tuple[int, list[str], list[str]]]:
    """(line number, header, cells) of every non-blank record after the header."""
    reader = _csv_reader(job.content, job.delimiter)
    header = [_column_name(h) for h in next(reader, [])]
    while True:
        line = reader.line_num + 1
        record = next(reader, None)
        if record is None:
            return
        if any(cell.strip() for cell in record):
            yield line, header, record


@dataclass(slots=True)
class _BatchOutcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


_SNAPSHOT_FIELDS = (
    "name",
    "email",
    "phone",
    "company",
    "is_vip",
    "external_crm_id",
    "external_crm_url",
    "attributes",
)


def _snapshot(contact: Contact) -> tuple[Any, ...]:
    return tuple(
        dict(contact.attributes) if name == "attributes" else getattr(contact, name)
        for name in _SNAPSHOT_FIELDS
    )


def _row_apply(contact: Contact, values: dict[str, Any]) -> None:
    """Empty cells were left out of ``values``: an import fills and corrects, never erases."""
    for column, value in values.items():
        if column == "id":
            continue
        if column == "vip":
            contact.is_vip = value
        elif column == "attributes":
            contact.attributes = {**(contact.attributes or {}), **value}
        else:
            setattr(contact, column, value)


def _batch_import(
    records: list[tuple[int, list[str], list[str]]], actor: User | None
) -> _BatchOutcome:
    outcome = _BatchOutcome()
    rows = []
    for number, header, record in records:
        row = _row_parse(number, header, record)
        if row.errors:
            outcome.skipped += 1
            outcome.errors.extend(row.errors)
        else:
            rows.append(row)

    crm_ids = {r.values["external_crm_id"] for r in rows if "external_crm_id" in r.values}
    ids = {r.values["id"] for r in rows if "id" in r.values}
    emails = {r.values["email"].lower() for r in rows if "email" in r.values}
    by_crm_id: dict[str, Contact] = {}
    by_id: dict[int, Contact] = {}
    by_email: dict[str, Contact] = {}
    if crm_ids or ids or emails:
        # Oldest first, so of several contacts sharing an email the oldest is the match.
        found: Contact
        # Only contacts the importer may see can match: a file must not reach, or reveal,
        # another team's customers. A CRM id or email known only there makes a new contact.
        scope = contacts_visible_to(user=actor) if actor else Contact.objects.none()
        for found in (
            scope.annotate(email_lower=Lower("email"))
            .filter(Q(external_crm_id__in=crm_ids) | Q(pk__in=ids) | Q(email_lower__in=emails))
            .order_by("pk")
        ):
            by_id[found.pk] = found
            if found.external_crm_id:
                by_crm_id.setdefault(found.external_crm_id, found)
            if found.email:
                by_email.setdefault(found.email.lower(), found)
    originals = {pk: _snapshot(contact) for pk, contact in by_id.items()}

    now = timezone.now()
    new: list[Contact] = []
    for row in list(rows):
        if "id" in row.values and row.values["id"] not in by_id:
            rows.remove(row)
            outcome.skipped += 1
            outcome.errors.append(
                {
                    "row": row.number,
                    "column": "id",
                    "message": f"No contact #{row.values['id']} that you may see.",
                }
            )
    for row in rows:
        values = row.values
        contact = (
            by_crm_id.get(values.get("external_crm_id", ""))
            or by_id.get(values.get("id", 0))
            or by_email.get(values.get("email", "").lower())
        )
        if contact is None:
            contact = Contact(
                source=ContactSource.IMPORT,
                created_by_id=actor.pk if actor else None,
                first_seen_at=now,
                last_seen_at=now,
            )
            new.append(contact)
            _row_apply(contact, values)
            outcome.created += 1
        else:
            before = _snapshot(contact)
            _row_apply(contact, values)
            if _snapshot(contact) == before:
                outcome.unchanged += 1
            else:
                outcome.updated += 1
        # Later rows of the file that name the same customer land on this contact.
        if contact.external_crm_id:
            by_crm_id.setdefault(contact.external_crm_id, contact)
        if contact.email:
            by_email.setdefault(contact.email.lower(), contact)

    changed = [c for pk, c in by_id.items() if _snapshot(c) != originals[pk]]
    for contact in changed:
        contact.updated_at = now
    Contact.objects.bulk_create(new)
    Contact.objects.bulk_update(changed, [*_SNAPSHOT_FIELDS, "updated_at"])
    merge_suggestions_by_name_and_company(contacts=[*new, *changed])
    contacts_created_publish(contacts=new)
    return outcome


def contact_import_run(*, job_id: int) -> ContactImport | None:
    """Import a stored file in batches, each committed with the job's progress, so the page
    can show it and a redelivered task resumes after the last committed batch. Rows with
    problems are reported and skipped; contacts match by CRM id, then by their id here (as
    exported), then by email ignoring case, so importing a file twice creates nothing new.
    Returns the job, or None when another worker holds it or it is finished."""
    now = timezone.now()
    claimed = (
        ContactImport.objects.filter(pk=job_id)
        .filter(
            Q(status=ContactImportStatus.PENDING)
            | Q(status=ContactImportStatus.RUNNING, updated_at__lt=now - IMPORT_STALE_AFTER)
        )
        .update(status=ContactImportStatus.RUNNING, updated_at=now)
    )
    if claimed != 1:
        return None
    job = ContactImport.objects.get(pk=job_id)
    try:
        records = itertools.islice(_records(job), job.processed_rows, None)
        while batch := list(itertools.islice(records, IMPORT_BATCH_SIZE)):
            with transaction.atomic():
                outcome = _batch_import(batch, job.created_by)
                job.processed_rows += len(batch)
                job.created_count += outcome.created
                job.updated_count += outcome.updated
                job.unchanged_count += outcome.unchanged
                job.skipped_count += outcome.skipped
                room = ContactImport.MAX_ERRORS - len(job.errors)
                job.errors = [*job.errors, *outcome.errors[: max(room, 0)]]
                job.save(
                    update_fields=[
                        "processed_rows",
                        "created_count",
                        "updated_count",
                        "unchanged_count",
                        "skipped_count",
                        "errors",
                        "updated_at",
                    ]
                )
    except Exception:
        with transaction.atomic():
            ContactImport.objects.filter(pk=job_id).update(
                status=ContactImportStatus.FAILED,
                failure=(
                    f"The import stopped after {job.processed_rows} of {job.total_rows} rows. "
                    "The rows before were imported; upload the file again to finish, "
                    "rows already imported will be matched, not duplicated."
                ),
                content="",
                finished_at=timezone.now(),
            )
            _import_audit(job, "contacts.import_failed")
        raise
    job.status = ContactImportStatus.DONE
    job.content = ""
    job.finished_at = timezone.now()
    with transaction.atomic():
        job.save(update_fields=["status", "content", "finished_at", "updated_at"])
        _import_audit(job, "contacts.imported")
    return job


def _import_audit(job: ContactImport, action: str) -> None:
    audit_record(
        action=action,
        actor=job.created_by,
        obj=job,
        file_name=job.file_name,
        rows=job.processed_rows,
        created=job.created_count,
        updated=job.updated_count,
        unchanged=job.unchanged_count,
        skipped=job.skipped_count,
    )


def contact_imports_stalled() -> list[int]:
    """Imports waiting for a task that never came (a lost broker message) or whose worker
    died: their ids, to enqueue again. ``contact_import_run`` claims each once."""
    now = timezone.now()
    return list(
        ContactImport.objects.filter(
            Q(status=ContactImportStatus.PENDING, created_at__lt=now - timedelta(minutes=2))
            | Q(status=ContactImportStatus.RUNNING, updated_at__lt=now - IMPORT_STALE_AFTER)
        ).values_list("pk", flat=True)[:100]
    )


# Fields a merge may fill in on the kept contact when it has no value of its own.
_MERGE_FILLS = ("name", "email", "phone", "company", "external_crm_id", "external_crm_url")


class MergeRefused(Exception):
    """The two contacts cannot be merged; the message says why."""


@transaction.atomic
def contact_merge(*, merged: Contact, kept: Contact, actor: User) -> ContactMerge:
    """Merge one contact into another: its identities and conversations move to the kept
    contact, which takes any details it lacks. Nothing of the kept contact is overwritten,
    and what moved is recorded so ``contact_merge_undo`` can put it back."""
    if merged.pk == kept.pk:
        raise MergeRefused("A contact cannot be merged into itself.")
    locked = {
        c.pk: c
        for c in Contact.objects.select_for_update()
        .filter(pk__in=[merged.pk, kept.pk])
        .order_by("pk")
    }
    merged, kept = locked[merged.pk], locked[kept.pk]
    if merged.merged_into_id or kept.merged_into_id:
        raise MergeRefused("One of these contacts was already merged into another.")

    identity_ids = list(SocialIdentity.objects.filter(contact=merged).values_list("pk", flat=True))
    conversation_ids = list(
        Conversation.objects.filter(contact=merged).values_list("pk", flat=True)
    )
    SocialIdentity.objects.filter(pk__in=identity_ids).update(contact=kept)
    Conversation.objects.filter(pk__in=conversation_ids).update(contact=kept)

    previous: dict[str, object] = {}
    for name in _MERGE_FILLS:
        if not getattr(kept, name) and getattr(merged, name):
            previous[name] = getattr(kept, name)
            setattr(kept, name, getattr(merged, name))
    if merged.is_vip and not kept.is_vip:
        previous["is_vip"], kept.is_vip = False, True
    extra = {k: v for k, v in merged.attributes.items() if k not in kept.attributes}
    if extra:
        previous["attributes"] = dict(kept.attributes)
        kept.attributes = {**kept.attributes, **extra}
    if merged.first_seen_at < kept.first_seen_at:
        previous["first_seen_at"] = kept.first_seen_at.isoformat()
        kept.first_seen_at = merged.first_seen_at
    if merged.last_seen_at > kept.last_seen_at:
        previous["last_seen_at"] = kept.last_seen_at.isoformat()
        kept.last_seen_at = merged.last_seen_at
    kept.save()
    merged.merged_into = kept
    merged.save(update_fields=["merged_into", "updated_at"])

    low, high = sorted((merged.pk, kept.pk))
    MergeSuggestion.objects.filter(contact_id=low, other_id=high).update(
        status=MergeSuggestionStatus.ACCEPTED
    )
    merge = ContactMerge.objects.create(
        kept=kept,
        merged=merged,
        identity_ids=identity_ids,
        conversation_ids=conversation_ids,
        previous_values=previous,
        merged_by=actor,
    )
    # Ids and counts, not names: the log outlives a contact's erasure.
    audit_record(
        action="contact.merged",
        actor=actor,
        obj=merged,
        object_repr=f"Contact #{merged.pk}",
        before={"merged_into": None},
        after={"merged_into": kept.pk},
        merge=merge.pk,
        identities=len(identity_ids),
        conversations=len(conversation_ids),
        filled=sorted(previous),
    )
    _publish("contact.merged", str(merge.pk), {"contact": kept, "merged": merged})
    return merge


@transaction.atomic
def contact_merge_undo(*, merge: ContactMerge, actor: User) -> ContactMerge:
    """Put a merge back: the identities it moved return with every conversation only they
    wrote in (also those that began after the merge), and each detail it filled in is
    cleared again unless someone changed it since."""
    merge = ContactMerge.objects.select_for_update().get(pk=merge.pk)
    if merge.undone_at:
        raise MergeRefused("This merge was already undone.")
    kept = Contact.objects.select_for_update().get(pk=merge.kept_id)
    if kept.merged_into_id:
        raise MergeRefused(f"{kept} was itself merged into another contact since; undo that first.")
    merged = Contact.objects.get(pk=merge.merged_id)

    inbound = Q(messages__direction="in")
    theirs = (
        Conversation.objects.filter(contact=kept)
        .annotate(
            mine=Count(
                "messages", filter=inbound & Q(messages__author_identity__in=merge.identity_ids)
            ),
            others=Count(
                "messages",
                filter=inbound & ~Q(messages__author_identity__in=merge.identity_ids),
            ),
        )
        .filter(Q(pk__in=merge.conversation_ids) | Q(mine__gt=0, others=0))
        .values_list("pk", flat=True)
    )
    returned = list(theirs)
    Conversation.objects.filter(pk__in=returned).update(contact_id=merged.pk)
    SocialIdentity.objects.filter(pk__in=merge.identity_ids, contact=kept).update(
        contact_id=merged.pk
    )

    for name, value in merge.previous_values.items():
        if name == "attributes":
            # Only the keys the merge added, and only if they still hold its values.
            for key in set(kept.attributes) - set(value):
                if kept.attributes[key] == merged.attributes.get(key):
                    kept.attributes.pop(key)
            continue
        if name in ("first_seen_at", "last_seen_at"):
            value = datetime.fromisoformat(str(value))
        if getattr(kept, name) == getattr(merged, name):
            setattr(kept, name, value)
    kept.save()
    Contact.objects.filter(pk=merged.pk).update(merged_into=None)
    low, high = sorted((merged.pk, kept.pk))
    MergeSuggestion.objects.filter(contact_id=low, other_id=high).update(
        status=MergeSuggestionStatus.OPEN
    )
    merge.undone_at, merge.undone_by = timezone.now(), actor
    merge.save(update_fields=["undone_at", "undone_by"])
    audit_record(
        action="contact.merge_undone",
        actor=actor,
        obj=merged,
        object_repr=f"Contact #{merged.pk}",
        before={"merged_into": kept.pk},
        after={"merged_into": None},
        merge=merge.pk,
        identities=len(merge.identity_ids),
        conversations=len(returned),
    )
    return merge


def merge_suggestion_dismiss(*, suggestion: MergeSuggestion) -> MergeSuggestion:
    MergeSuggestion.objects.filter(pk=suggestion.pk).update(status=MergeSuggestionStatus.DISMISSED)
    suggestion.refresh_from_db()
    return suggestion


@transaction.atomic
def identity_move(*, identity: SocialIdentity, to: Contact, actor: User) -> IdentityMove:
    """Attach an identity to another contact, with the conversations in which no one else
    wrote to us (those are this identity's); shared threads stay where they are."""
    identity = SocialIdentity.objects.select_for_update().get(pk=identity.pk)
    source_id = identity.contact_id
    if source_id == to.pk:
        raise MergeRefused("The identity already belongs to that contact.")
    inbound = Q(messages__direction="in")
    only_this_identity = (
        Conversation.objects.filter(contact_id=source_id)
        .annotate(
            mine=Count("messages", filter=inbound & Q(messages__author_identity=identity)),
            others=Count("messages", filter=inbound & ~Q(messages__author_identity=identity)),
        )
        .filter(mine__gt=0, others=0)
        .values_list("pk", flat=True)
    )
    conversation_ids = list(only_this_identity)
    Conversation.objects.filter(pk__in=conversation_ids).update(contact=to)
    SocialIdentity.objects.filter(pk=identity.pk).update(contact=to)
    move = IdentityMove.objects.create(
        identity=identity,
        from_contact_id=source_id,
        to_contact=to,
        conversation_ids=conversation_ids,
        moved_by=actor,
    )
    audit_record(
        action="identity.moved",
        actor=actor,
        obj=identity,
        object_repr=f"{identity.get_platform_display()} identity #{identity.pk}",
        before={"contact": source_id},
        after={"contact": to.pk},
        move=move.pk,
        conversations=len(conversation_ids),
    )
    return move
