import pytest
from django.db import IntegrityError, transaction

from conversations.models import Direction, MessageKind, Priority, sentiment_label
from tests.factories import ChannelFactory, ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


def test_an_external_id_is_unique_per_channel():
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, external_id="tw-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        MessageFactory(conversation=conversation, external_id="tw-1")
    MessageFactory(conversation=ConversationFactory(channel=ChannelFactory()), external_id="tw-1")


def test_many_unsent_messages_may_lack_an_external_id():
    conversation = ConversationFactory()
    for _ in range(3):
        MessageFactory(
            conversation=conversation,
            external_id=None,
            direction=Direction.OUT,
            kind=MessageKind.NOTE,
        )
    assert conversation.messages.count() == 3


def test_priorities_sort_by_urgency():
    assert Priority.LOW < Priority.NORMAL < Priority.HIGH < Priority.URGENT


@pytest.mark.parametrize(
    ("score", "label"),
    [(None, ""), (0.5, "positive"), (0.05, "positive"), (0.0, "neutral"), (-0.05, "negative")],
)
def test_sentiment_labels_use_the_usual_cut_offs(score, label):
    assert sentiment_label(score) == label
