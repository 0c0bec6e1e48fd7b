"""Inbound text is shown as text: posts whose body, author name and handle carry classic XSS
payloads come in through the real pipeline, and every page that shows them renders them inert
(no script, no event handler, no javascript: link, no element or attribute of theirs)."""

import re
from dataclasses import replace
from functools import cache
from html.parser import HTMLParser
from pathlib import Path

import markupsafe
import pytest
from django.utils.html import escape

from channels_ingest.pipeline import ingest
from contacts.models import Contact
from conversations.models import Conversation
from conversations.services import conversation_note_add
from tests.factories import RoutingRuleFactory, post

pytestmark = pytest.mark.django_db

PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    '<img src="x" onerror="alert(document.cookie)">',
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<body onload=alert(1)>",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<a href="javascript:alert(1)">click</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>',
    "javascript:alert(1)",
    '"><script>alert(1)</script>',
    "'><img src=x onerror=alert(1)>",
    '" onmouseover="alert(1)',
    "' onfocus='alert(1)' autofocus='",
    "</textarea><script>alert(1)</script>",
    "</title><script>alert(1)</script>",
    "</script><script>alert(1)</script>",
    "{{7*7}}",
    "{% debug %}",
    "${alert(1)}",
    "[x](javascript:alert(1))",
    "<details open ontoggle=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e",
    '<object data="javascript:alert(1)">',
    "<embed src=javascript:alert(1)>",
    "<form action=javascript:alert(1)><button>x</button></form>",
    "<input autofocus onfocus=alert(1)>",
    "<style>body{background:url(javascript:alert(1))}</style>",
    '<base href="javascript:alert(1)//">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<div style="background:url(javascript:alert(1))">',
    "%3Cscript%3Ealert(1)%3C/script%3E",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '<x hx-get="/admin/" hx-trigger="load">',
    '<div hx-on:click="alert(1)">',
    "<a href=javascript&colon;alert(1)>x</a>",
    "\u202e<script>alert(1)</script>",
]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "data", "xlink:href", "background"}


@cache
def _our_tags_and_hx_attributes() -> tuple[set[str], set[str]]:
    """The elements and htmx attributes our own templates use: anything else came from data."""
    text = "\n".join(p.read_text() for p in TEMPLATES.rglob("*.html"))
    tags = {t.lower() for t in re.findall(r"<([a-zA-Z][a-zA-Z0-9-]*)", text)}
    hx = set(re.findall(r"\b(hx-[a-z:-]+)=", text))
    return tags, hx


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))


def _url_scheme(value: str) -> str:
    # Browsers ignore whitespace and control characters inside a scheme.
    cleaned = re.sub(r"[\x00-\x20\u202e]", "", value).lower()
    return cleaned.split(":", 1)[0] if ":" in cleaned else ""


def assert_inert(html: str, where: str) -> None:
    our_tags, our_hx = _our_tags_and_hx_attributes()
    parser = _Elements()
    parser.feed(html)
    parser.close()
    for tag, attrs in parser.elements:
        assert tag in our_tags, f"{where}: <{tag}> came from the data"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"{where}: <{tag} {name}=…>"
            if name.startswith("hx-"):
                assert name in our_hx, f"{where}: <{tag} {name}=…>"
            if name in URL_ATTRIBUTES:
                scheme = _url_scheme(value)
                assert scheme not in {"javascript", "vbscript"}, f"{where}: {name}={value!r}"
                assert not (scheme == "data" and not value.startswith("data:image/")), where
            if name == "style":
                assert "url(" not in value and "javascript" not in value.lower(), where
        if tag == "script":
            assert attrs.get("src", "").startswith("/static/"), f"{where}: inline <script>"
        if tag in {"img"}:
            assert attrs["src"].startswith(("/static/", "data:image/svg+xml")), where
        if tag == "meta":
            assert "http-equiv" not in attrs, where
    # The raw markup of no payload survives anywhere on the page.
    for payload in PAYLOADS:
        if "<" in payload:
            assert payload not in html, f"{where}: {payload!r} unescaped"


@pytest.fixture
def stored(world):
    """One post per payload, the payload in its body, its author's name and handle; and a
    colleague's note mentioning the admin that quotes it."""
    posts = []
    for i, payload in enumerate(PAYLOADS):
        base = post(f"xss-{i}", author=f"attacker-{i}", body=f"Hello {payload} there")
        author = replace(base.author, display_name=payload, handle=payload[:100])
        posts.append(replace(base, author=author))
    result = ingest(channel=world.channel_a, posts=posts)
    assert result.stored == len(PAYLOADS)
    conversations = list(
        Conversation.objects.filter(
            channel=world.channel_a, messages__external_id__startswith="xss-"
        )
        .distinct()
        .order_by("pk")
    )
    assert len(conversations) == len(PAYLOADS)
    for conversation, payload in zip(conversations[:10], PAYLOADS[:10], strict=True):
        conversation_note_add(
            conversation=conversation, author=world.agent_a, body=f"@alice look: {payload}"
        )
    return conversations


def test_the_corpus_is_large_enough():
    assert len(PAYLOADS) >= 25


def test_the_inbox_renders_payloads_inert(login, world, stored):
    client = login(world.admin)
    for url in ("/inbox/?view=all", "/inbox/?view=all&q=script", "/inbox/updates/?view=all"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_inert(response.content.decode(), url)


def test_the_conversation_pages_render_payloads_inert(login, world, stored):
    client = login(world.admin)
    for conversation, payload in zip(stored, PAYLOADS, strict=True):
        html = client.get(f"/inbox/{conversation.pk}/").content.decode()
        assert_inert(html, f"conversation with {payload!r}")
        # Shown, as text (the thread is a Jinja2 list: MarkupSafe's escaping).
        assert markupsafe.escape(f"Hello {payload} there") in html


def test_the_contact_pages_render_payloads_inert(login, world, stored):
    client = login(world.admin)
    html = client.get("/contacts/").content.decode()
    assert_inert(html, "/contacts/")
    for contact in Contact.objects.filter(conversations__in=stored).distinct():
        html = client.get(f"/contacts/{contact.pk}/").content.decode()
        assert_inert(html, f"contact {contact.name!r}")
        assert escape(contact.name) in html
        edit = client.get(f"/contacts/{contact.pk}/edit/")
        if edit.status_code == 200:
            assert_inert(edit.content.decode(), f"editing contact {contact.name!r}")


def test_mentions_render_payloads_inert(login, world, stored):
    html = login(world.admin).get("/inbox/mentions/").content.decode()
    assert_inert(html, "/inbox/mentions/")
    assert escape("look: <script>alert(1)</script>") in html


def test_the_routing_dry_run_renders_payloads_inert(login, world, stored):
    client = login(world.admin)
    RoutingRuleFactory(name="<img src=x onerror=alert(1)>")
    html = client.get("/routing/").content.decode()
    assert_inert(html, "/routing/")
    for payload in PAYLOADS:
        response = client.post(
            "/routing/dry-run/",
            {"text": payload, "event": "message_received", "kind": "mention", "priority": "2"},
        )
        assert response.status_code == 200
        assert_inert(response.content.decode(), f"dry run of {payload!r}")


def test_a_contact_link_cannot_be_a_javascript_url(login, world, stored):
    contact = Contact.objects.filter(conversations__in=stored).first()
    client = login(world.admin)
    response = client.post(
        f"/contacts/{contact.pk}/edit/",
        {"name": "Mallory", "external_crm_url": "javascript:alert(1)"},
    )
    contact.refresh_from_db()
    assert contact.external_crm_url == ""
    assert response.status_code in (200, 400)


def test_no_template_has_inline_script_or_event_handlers():
    """The CSP forbids inline script; a template that brings some back would break its page."""
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text, flags=re.IGNORECASE):
            assert "src=" in tag, f"{path}: {tag}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{path}: inline event handler"
        assert "javascript:" not in text.lower(), f"{path}: javascript: URL"
        assert "|safe" not in text and "autoescape off" not in text, f"{path}: unescaped output"
