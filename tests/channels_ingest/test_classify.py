import pytest

from channels_ingest.classify import KeywordMatcher, asks_for_action, language_of
from channels_ingest.models import KeywordList
from channels_ingest.pipeline import ingest
from conversations.models import Conversation, Message
from tests.factories import ChannelFactory, TagFactory, post


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Grüße aus München, wo ist meine Bestellung geblieben?", "de"),
        ("Bonjour, ma commande n'est jamais arrivée chez moi", "fr"),
        ("¿Dónde está mi pedido? Llevo dos semanas esperando", "es"),
        ("My order never arrived and nobody answers the phone", "en"),
        ("ok", ""),
        ("👍👍", ""),
    ],
)
def test_language_is_guessed_from_text_long_enough_to_judge(text, language):
    assert language_of(text) == language


def test_the_platforms_language_wins_over_a_guess():
    assert language_of("My order never arrived and nobody answers", stated="pt") == "pt"


def test_keyword_lists_match_whole_words_in_any_case():
    matcher = KeywordMatcher.build(
        [("billing", ["invoice", "charged twice"]), ("outage", ["down"]), ("empty", [" "])]
    )
    assert matcher.match("I was CHARGED TWICE on my Invoice") == ["billing"]
    assert matcher.match("The site is down again") == ["outage"]
    assert matcher.match("I downloaded the invoices") == []


@pytest.mark.parametrize(
    ("text", "sentiment", "keywords", "expected"),
    [
        ("Is the shop open on Sunday?", 0.0, [], True),
        ("This is terrible service", -0.5, [], True),
        ("Just bought the new phone", 0.0, ["billing"], True),
        ("Saw the new ad on TV", 0.0, [], False),
        ("Love it!", 0.6, [], False),
    ],
)
def test_a_post_asks_for_action_when_it_questions_complains_or_hits_a_keyword(
    text, sentiment, keywords, expected
):
    assert asks_for_action(text, sentiment=sentiment, keywords=keywords) is expected


@pytest.mark.django_db
def test_keyword_matches_are_stored_on_the_message_and_tag_the_conversation():
    tag = TagFactory(name="billing")
    KeywordList.objects.create(name="billing", terms=["refund", "invoice"], tag=tag)
    KeywordList.objects.create(name="retired", terms=["refund"], is_active=False)
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1", body="Where is my refund?")])
    assert Message.objects.get().keywords == ["billing"]
    assert list(Conversation.objects.get().tags.values_list("name", flat=True)) == ["billing"]
    ingest(channel=channel, posts=[post("2", body="Still no refund for the invoice")])
    assert Conversation.objects.get().tags.count() == 1


@pytest.mark.django_db
def test_the_message_language_is_detected_when_the_platform_gives_none():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1", body="Wo bleibt meine Bestellung, bitte um Antwort")])
    assert Message.objects.get().language == "de"


@pytest.mark.django_db
def test_mentions_that_ask_nothing_are_kept_for_monitoring_until_one_does():
    channel = ChannelFactory(settings={"flavour": "x", "monitor_unactionable": True})
    ingest(channel=channel, posts=[post("1", body="Saw the new ad on TV today")])
    conversation = Conversation.objects.get()
    assert conversation.is_monitoring
    ingest(channel=channel, posts=[post("2", body="Actually, does it ship to Ireland?")])
    conversation.refresh_from_db()
    assert not conversation.is_monitoring


@pytest.mark.django_db
def test_without_the_setting_every_mention_goes_to_the_inbox():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1", body="Saw the new ad on TV today")])
    assert not Conversation.objects.get().is_monitoring


@pytest.mark.django_db
def test_listen_only_channels_stay_in_monitoring_even_for_questions():
    channel = ChannelFactory(mode="listen")
    ingest(channel=channel, posts=[post("1", body="Saw the ad")])
    ingest(channel=channel, posts=[post("2", body="Is it out yet?")])
    assert Conversation.objects.get().is_monitoring
