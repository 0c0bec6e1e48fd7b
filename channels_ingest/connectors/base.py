"""The small interface every connector implements."""

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from channels_ingest.types import FetchResult, ParseResult, SendResult

if TYPE_CHECKING:
    from channels_ingest.models import ChannelAccount
    from conversations.models import Message


class ConnectorError(Exception):
    """The platform refused or failed; the message is shown to admins as the channel's error."""


class TransientError(ConnectorError):
    """Worth retrying with backoff: timeouts, 5xx.

    ``request_sent`` says whether the platform may have acted on the request (a read timeout,
    a connection dropped mid-answer). A read is safe to repeat either way; a send is repeated
    only when the request certainly had no effect, so a customer never gets a reply twice.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class RateLimited(ConnectorError):
    def __init__(self, message: str, *, reset_at: datetime) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class ReauthRequired(ConnectorError):
    """Credentials expired or were revoked; an admin must reconnect the account."""


class Connector(Protocol):
    platform: ClassVar[str]

    def fetch(self, channel: "ChannelAccount", cursor: dict[str, Any]) -> FetchResult:
        """New posts since the cursor, and the cursor to store once they are committed."""
        ...

    def parse(self, channel: "ChannelAccount", payload: Any) -> ParseResult:
        """Posts from one decoded webhook payload; events it cannot read come back rejected,
        with their raw JSON and the reason, so the rest of the payload still goes through."""
        ...

    def read_item(
        self, channel: "ChannelAccount", context: dict[str, Any], item: Any
    ) -> ParseResult:
        """One item of a poll page or a delivery read again alone, for the retry of its dead
        letter: ``context`` is what was kept with it when it was rejected (which reader, the
        parts of the page it referred to). An item that still cannot be read comes back
        rejected with the reason; a context this connector does not know raises
        ConnectorError."""
        ...

    def send(self, channel: "ChannelAccount", message: "Message") -> SendResult:
        """Publish an outbound message; returns the platform's id for it."""
        ...
