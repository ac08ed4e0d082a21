"""The wire models of webhook administration (docs/api.md, "Webhook administration"): the
endpoints, their deliveries, and resends — what the `admin` routes under `/v1/webhooks` take
and answer (docs/openapi.json is generated from these)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from coordinator.api.tables import WebhookDeliveryRow, WebhookEndpointRow

ENDPOINT_ID_PATTERN = r"^we_[0-9a-f]{16}$"
#: A page of deliveries goes on after the last one's (endpoint id, sequence).
DELIVERY_CURSOR_PATTERN = r"^we_[0-9a-f]{16}:[0-9]{1,18}$"
#: A page of deliveries holds at most this many.
MAX_DELIVERY_PAGE = 500


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


#: A receiver's URL: http(s), a host name or IPv4 address, an optional port, an optional path
#: of printable ASCII (the dispatcher checks it again: `coordinator.api.webhooks`).
WEBHOOK_URL_PATTERN = (
    r"^https?://[A-Za-z0-9][A-Za-z0-9.-]{0,252}"
    r"(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    r"(/[!-~]*)?$"
)


class WebhookEndpointCreate(BaseModel):
    """A new receiver: an http(s) URL, at most 2000 characters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[str, Field(max_length=2000, pattern=WEBHOOK_URL_PATTERN)]


class WebhookEndpoint(BaseModel):
    """A receiver of withdrawal events, numbering its own deliveries 1, 2, 3…"""

    model_config = ConfigDict(extra="forbid")

    id: str
    url: str
    enabled: bool
    created_at: float
    disabled_at: float | None = None
    #: the last sequence number given to one of its deliveries (0: none yet)
    sequence: int
    #: its deliveries not yet answered 2xx, and those given up on (dead letters)
    pending: int
    dead: int


class WebhookDelivery(BaseModel):
    """One event to one endpoint."""

    model_config = ConfigDict(extra="forbid")

    endpoint_id: str
    sequence: int
    event_id: int
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    #: the last failure: a status code or an exception class, never the receiver's text
    last_error: str | None = None
    delivered_at: float | None = None


class WebhookDeliveryPage(BaseModel):
    """Deliveries by (endpoint, sequence); `next_cursor` until the last page."""

    model_config = ConfigDict(extra="forbid")

    items: list[WebhookDelivery]
    next_cursor: str | None = None


class WebhookResend(BaseModel):
    """What to deliver again, to every enabled endpoint: exactly one of an event, every event
    of a withdrawal, or every event carrying a chain transaction hash."""

    # exactly one of the three, and never null: what the validator below checks, in the schema
    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    event_id: Annotated[int, Field(ge=1, le=2**53 - 1)] | SkipJsonSchema[None] = None
    withdrawal_id: Annotated[str, Field(pattern=r"^wd_[0-9a-f]{32}$")] | SkipJsonSchema[None] = None
    tx_hash: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")] | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WebhookResend:
        given = [v for v in (self.event_id, self.withdrawal_id, self.tx_hash) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of event_id, withdrawal_id, tx_hash")
        return self


class WebhookResent(BaseModel):
    """The new deliveries a resend made: one per event per enabled endpoint, each with a new
    sequence number and the event's own `event_id` (receivers dedupe by it)."""

    model_config = ConfigDict(extra="forbid")

    deliveries: int


def endpoint_view(row: WebhookEndpointRow, pending: int, dead: int) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.endpoint_id,
        url=row.url,
        enabled=row.disabled_at is None,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        sequence=row.sequence,
        pending=pending,
        dead=dead,
    )


def delivery_view(row: WebhookDeliveryRow) -> WebhookDelivery:
    return WebhookDelivery(
        endpoint_id=row.endpoint_id,
        sequence=row.sequence,
        event_id=row.event_id,
        state=DeliveryState(row.state),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )
