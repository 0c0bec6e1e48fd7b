"""factory_boy factories for the core models."""

from datetime import UTC, datetime

import factory
from django.contrib.auth.models import Group, User

from channels_ingest.models import ChannelAccount, ChannelMode
from channels_ingest.platforms import Platform
from channels_ingest.types import InboundAuthor, InboundPost
from contacts.models import Contact, SocialIdentity
from conversations.models import Conversation, Direction, Message, MessageKind, Tag
from governance.models import ChannelAccess, Team, TeamMembership


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "pw-for-tests")

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.add(Group.objects.get(name=extracted))
        if create:
            self.save()


class TeamFactory(factory.django.DjangoModelFactory[Team]):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class TeamMembershipFactory(factory.django.DjangoModelFactory[TeamMembership]):
    class Meta:
        model = TeamMembership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)


class ChannelFactory(factory.django.DjangoModelFactory[ChannelAccount]):
    class Meta:
        model = ChannelAccount

    platform = Platform.DEMO
    name = factory.Sequence(lambda n: f"Channel {n}")
    handle = "@acme"
    mode = ChannelMode.ENGAGE
    settings = factory.LazyFunction(lambda: {"flavour": "x"})


class ChannelAccessFactory(factory.django.DjangoModelFactory[ChannelAccess]):
    class Meta:
        model = ChannelAccess

    channel = factory.SubFactory(ChannelFactory)
    team = factory.SubFactory(TeamFactory)
    can_reply = True


class ContactFactory(factory.django.DjangoModelFactory[Contact]):
    class Meta:
        model = Contact

    name = factory.Faker("name")


class IdentityFactory(factory.django.DjangoModelFactory[SocialIdentity]):
    class Meta:
        model = SocialIdentity

    contact = factory.SubFactory(ContactFactory)
    platform = Platform.DEMO
    platform_user_id = factory.Sequence(lambda n: f"uid-{n}")
    handle = factory.Sequence(lambda n: f"handle{n}")


class ConversationFactory(factory.django.DjangoModelFactory[Conversation]):
    class Meta:
        model = Conversation

    contact = factory.SubFactory(ContactFactory)
    channel = factory.SubFactory(ChannelFactory)
    subject = "My order never arrived"
    thread_key = factory.Sequence(lambda n: f"thread:t{n}")
    last_message_preview = "My order never arrived"


class MessageFactory(factory.django.DjangoModelFactory[Message]):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    channel = factory.SelfAttribute("conversation.channel")
    direction = Direction.IN
    kind = MessageKind.MENTION
    external_id = factory.Sequence(lambda n: f"ext-{n}")
    body = "My order never arrived"


def post(
    external_id: str,
    *,
    author: str = "u1",
    kind: str = "mention",
    body: str = "Where is my order?",
    at: datetime | None = None,
    reply_to: str = "",
    thread: str = "",
    handle: str = "",
    email: str = "",
    followers: int | None = None,
) -> InboundPost:
    """An inbound post with just the fields a test cares about."""
    return InboundPost(
        external_id=external_id,
        kind=kind,
        author=InboundAuthor(
            platform_user_id=author,
            handle=handle or f"h_{author}",
            display_name=f"Name {author}",
            followers_count=followers,
            email=email,
        ),
        body=body,
        created_at=at or datetime(2026, 1, 5, 12, 0, tzinfo=UTC),
        in_reply_to_id=reply_to,
        thread_id=thread,
        raw={"id": external_id},
    )


class TagFactory(factory.django.DjangoModelFactory[Tag]):
    class Meta:
        model = Tag

    name = factory.Sequence(lambda n: f"tag-{n}")


# --- Escalation and outbound webhooks (models named by label: the imports above stay as they are)


class WebhookEndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "conversations.WebhookEndpoint"

    name = factory.Sequence(lambda n: f"Endpoint {n}")
    url = factory.Sequence(lambda n: f"https://hooks.example.com/scrm/{n}")
    secret = "whsec-test"


class DepartmentFactory(factory.django.DjangoModelFactory):
    """An in-app department by default: give it a team (or delivery email/webhook)."""

    class Meta:
        model = "conversations.Department"

    name = factory.Sequence(lambda n: f"Department {n}")
    delivery = "in_app"
    team = factory.SubFactory(TeamFactory)


class EscalationPathFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "conversations.EscalationPath"

    name = factory.Sequence(lambda n: f"Path {n}")


class EscalationLevelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "conversations.EscalationLevel"

    path = factory.SubFactory(EscalationPathFactory)
    position = factory.Sequence(lambda n: n)


# --- Routing settings: rules, SLA policies and business hours


class RoutingRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "conversations.RoutingRule"

    name = factory.Sequence(lambda n: f"Rule {n}")
    position = factory.Sequence(lambda n: n)
    events = factory.LazyFunction(lambda: ["message_received"])
    conditions = factory.LazyFunction(
        lambda: [{"field": "text", "op": "contains_any", "value": ["refund"]}]
    )
    actions = factory.LazyFunction(lambda: [{"type": "set_priority", "value": 4}])


class BusinessCalendarFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "conversations.BusinessCalendar"

    name = factory.Sequence(lambda n: f"Hours {n}")
    time_zone = "Europe/Berlin"


class SlaPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "conversations.SlaPolicy"

    name = factory.Sequence(lambda n: f"Policy {n}")
    first_response_minutes = 60
