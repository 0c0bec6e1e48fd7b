"""Connectors, one module per platform, registered by platform name."""

from channels_ingest.connectors.api import ApiConnector
from channels_ingest.connectors.base import Connector, ConnectorError, RateLimited, ReauthRequired
from channels_ingest.connectors.demo import DemoConnector
from channels_ingest.connectors.facebook import FacebookConnector
from channels_ingest.connectors.x import XConnector

_REGISTRY: dict[str, type[Connector]] = {
    connector.platform: connector
    for connector in (
        DemoConnector,
        XConnector,
        FacebookConnector,
        ApiConnector,
    )
}


def connector_for(platform: str) -> Connector:
    try:
        return _REGISTRY[platform]()
    except KeyError:
        raise ConnectorError(f"No connector is registered for platform {platform!r}.") from None


__all__ = ["Connector", "ConnectorError", "RateLimited", "ReauthRequired", "connector_for"]
