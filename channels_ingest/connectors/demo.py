"""A simulated channel for the demo: realistic customer posts on every poll.

It speaks through the same interface as the real connectors, so the demo exercises the real
pipeline. What it produces is derived from the cursor alone (a seeded random generator), so a
poll that is retried yields the very same posts and the pipeline stores them once.
"""

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.utils import timezone

from channels_ingest.platforms import Platform
from channels_ingest.types import (
    FetchResult,
    InboundAuthor,
    InboundPost,
    ParseResult,
    RejectedPayload,
    SendResult,
)

if TYPE_CHECKING:
    from channels_ingest.models import ChannelAccount
    from conversations.models import Message

FIRST_NAMES = [
    "Amelia",
    "Ben",
    "Chloe",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Isla",
    "Jonas",
    "Kemi",
    "Liam",
    "Maya",
    "Nico",
    "Olga",
    "Priya",
    "Quentin",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Wes",
    "Ximena",
    "Yusuf",
    "Zoe",
    "Aiden",
    "Bianca",
    "Carlos",
    "Daria",
]
LAST_NAMES = [
    "Adams",
    "Baker",
    "Costa",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Murphy",
    "Novak",
    "Okafor",
    "Patel",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Usman",
    "Varga",
    "Walsh",
    "Xu",
    "Yilmaz",
    "Zimmer",
]
PRODUCTS = [
    "the X200 router",
    "my Acme Plus plan",
    "the mobile app",
    "my last invoice",
    "the smart thermostat",
    "your delivery service",
    "the loyalty card",
    "my account",
]

COMPLAINTS = [
    "{brand} my order #{order} still hasn't arrived, it's been {days} days. Any update?",
    "{brand} I was charged twice for {product}. Please fix this.",
    "{brand} {product} keeps crashing since yesterday's update. Really annoying.",
    "Third time I'm asking: why is {product} not working?? {brand}",
    "{brand} worst customer service ever. Nobody answers the phone. Cancelling {product}.",
    "{brand} the technician never showed up today. I took a day off for this!",
    "{brand} your website says in stock but my order #{order} was cancelled. What happened?",
]
QUESTIONS = [
    "{brand} hi, how do I change the billing address on {product}?",
    "{brand} does {product} work abroad? Travelling to Spain next week.",
    "{brand} is there a student discount for {product}?",
    "Quick question {brand}: can I return {product} after 30 days?",
    "{brand} what are your opening hours on Sunday?",
    "{brand} how long does shipping to Ireland usually take?",
]
PRAISE = [
    "Shout-out to {brand} support, sorted my problem with {product} in 5 minutes!",
    "Loving {product} so far, great job {brand}",
    "{brand} thanks for the quick refund, really appreciated.",
    "Honestly the best experience I've had with a telco. Well done {brand}!",
]
MENTIONS = [
    "Just got {product} from {brand}, unboxing later",
    "Anyone else using {product} from {brand}?",
    "Saw the new {brand} ad on TV today",
]
FOLLOW_UPS = [
    "Still waiting for an answer...",
    "Any news? This is getting ridiculous.",
    "Thanks, that worked!",
    "I sent you a DM with the details.",
    "Order number is #{order} if that helps.",
    "Ok, I'll try that and come back to you.",
    "Hello?? Is anyone reading this?",
]
DMS = [
    "Hi, here are my account details as requested: customer no. {order}.",
    "Hello, I'd rather not post this publicly: my card was charged {days} times.",
    "Can someone call me back? My phone is not working at all since this morning.",
    "Hi! Just following up on my complaint from last week.",
    "Thanks for the help earlier, the issue is solved now.",
]

# (weight, templates, kind) for a new top-level post.
_TOPICS = [(40, COMPLAINTS), (28, QUESTIONS), (14, PRAISE), (18, MENTIONS)]


@dataclass(frozen=True)
class DemoPersona:
    user_id: str
    name: str
    handle: str
    followers: int
    verified: bool


def persona(index: int) -> DemoPersona:
    """The index-th demo customer; the same index is always the same person."""
    rng = random.Random(f"persona:{index}")
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    influencer = rng.random() < 0.06
    return DemoPersona(
        user_id=f"demo-user-{index}",
        name=f"{first} {last}",
        handle=f"{first.lower()}{last.lower()[:3]}{index}",
        followers=rng.randint(20_000, 400_000) if influencer else rng.randint(3, 2_500),
        verified=influencer and rng.random() < 0.6,
    )


def _fill(template: str, rng: random.Random, brand: str) -> str:
    return template.format(
        brand=brand,
        order=rng.randint(100000, 999999),
        days=rng.randint(2, 14),
        product=rng.choice(PRODUCTS),
    ).strip()


def generate_posts(
    *,
    flavour: str,
    brand: str,
    seq: int,
    recent: list[list[str]],
    population: int,
    count: int,
    start: datetime,
    spacing: timedelta,
    rng: random.Random,
) -> tuple[list[InboundPost], list[list[str]]]:
    """``count`` posts numbered from ``seq``; ``recent`` holds [external id, author index,
    thread id] of earlier posts that later ones may answer. Returns posts and new ``recent``."""
    posts: list[InboundPost] = []
    recent = list(recent)
    for n in range(count):
        number = seq + n
        created = start + spacing * n
        roll = rng.random()
        if recent and roll < 0.30:
            # A follow-up by the same customer, in the thread they started.
            parent_id, author_index, thread_id = rng.choice(recent)
            who = persona(int(author_index))
            kind = "reply" if flavour == "x" else "comment"
            body = _fill(rng.choice(FOLLOW_UPS), rng, "")
            in_reply_to, thread = parent_id, thread_id
        elif roll < 0.42:
            who = persona(rng.randrange(population))
            kind, body = "dm", _fill(rng.choice(DMS), rng, "")
            in_reply_to, thread = "", f"dm-{who.user_id}"
        else:
            who = persona(rng.randrange(population))
            templates = rng.choices([t for _, t in _TOPICS], weights=[w for w, _ in _TOPICS])[0]
            body = _fill(rng.choice(templates), rng, brand)
            if flavour == "facebook":
                kind = "post" if rng.random() < 0.4 else "comment"
                body = body.replace(brand, "").strip().capitalize()
            else:
                kind = "mention"
            in_reply_to, thread = "", ""
        external_id = f"demo-{flavour}-{number}"
        thread = thread or external_id
        language = "en"
        posts.append(
            InboundPost(
                external_id=external_id,
                kind=kind,
                author=InboundAuthor(
                    platform_user_id=who.user_id,
                    handle=who.handle,
                    display_name=who.name,
                    profile_url=f"https://demo.invalid/{who.handle}",
                    followers_count=who.followers,
                    verified=who.verified,
                ),
                body=body,
                created_at=created,
                in_reply_to_id=in_reply_to,
                thread_id=thread,
                language=language,
                raw={
                    "id": external_id,
                    "kind": kind,
                    "text": body,
                    "author_id": who.user_id,
                    "created_at": created.isoformat(),
                    "in_reply_to": in_reply_to or None,
                    "thread": thread,
                },
            )
        )
        if kind != "dm":
            recent.append([external_id, who.user_id.rsplit("-", 1)[1], thread])
    return posts, recent[-40:]


class DemoConnector:
    platform: ClassVar[str] = Platform.DEMO

    def fetch(self, channel: "ChannelAccount", cursor: dict[str, Any]) -> FetchResult:
        seq = int(cursor.get("seq", 0))
        polls = int(cursor.get("polls", 0))
        # Seeded by the cursor alone, so a retried poll gives identical posts; the poll count
        # moves on even when a poll brings nothing, so quiet spells end.
        rng = random.Random(f"demo:{channel.pk}:{seq}:{polls}")
        count = rng.choices([0, 1, 2, 3, 4], weights=[15, 35, 25, 15, 10])[0]
        now = timezone.now()
        posts, recent = generate_posts(
            flavour=channel.settings.get("flavour", "x"),
            brand=channel.handle or "@acme",
            seq=seq,
            recent=cursor.get("recent", []),
            population=int(channel.settings.get("population", 250)),
            count=count,
            start=now - timedelta(seconds=count),
            spacing=timedelta(seconds=1),
            rng=rng,
        )
        return FetchResult(
            posts=posts, cursor={"seq": seq + count, "polls": polls + 1, "recent": recent}
        )

    def parse(self, channel: "ChannelAccount", payload: Any) -> ParseResult:
        """Accepts the same shape the demo puts in ``raw``: one object or a list of them."""
        items = payload if isinstance(payload, list) else [payload]
        posts, rejected = [], []
        for item in items:
            try:
                posts.append(_demo_post(item))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                rejected.append(
                    RejectedPayload(
                        raw=json.dumps(item, default=str),
                        error=f"Unreadable demo post: {exc!r}",
                        context={"reader": "post"},
                    )
                )
        return ParseResult(posts=posts, rejected=rejected)

    def read_item(
        self, channel: "ChannelAccount", context: dict[str, Any], item: Any
    ) -> ParseResult:
        """A demo post rejected from a payload, read again alone."""
        return self.parse(channel, [item])

    def send(self, channel: "ChannelAccount", message: "Message") -> SendResult:
        # Derived from our own id, so a retried send reports the same platform id.
        return SendResult(external_id=f"demo-out-{message.pk}")


def _demo_post(item: Any) -> InboundPost:
    return InboundPost(
        external_id=str(item["id"]),
        kind=item.get("kind", "mention"),
        author=InboundAuthor(
            platform_user_id=str(item["author_id"]),
            handle=item.get("handle", ""),
            display_name=item.get("name", ""),
        ),
        body=str(item["text"]),
        created_at=datetime.fromisoformat(item["created_at"]),
        in_reply_to_id=item.get("in_reply_to") or "",
        thread_id=item.get("thread") or "",
        raw=item,
    )
