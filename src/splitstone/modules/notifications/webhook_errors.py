"""Errors of the webhook operations (HTTP-facing; the contract's own error is `UnknownWebhookEventType`)."""

from __future__ import annotations

from splitstone.kernel.errors import Conflict, InvalidInput, NotFound


class WebhookEndpointNotFound(NotFound):
    code = "webhook-endpoint-not-found"
    title = "Webhook endpoint not found"


class WebhookDeliveryNotFound(NotFound):
    code = "webhook-delivery-not-found"
    title = "Webhook delivery not found"


class InvalidWebhookUrl(InvalidInput):
    code = "invalid-webhook-url"
    title = "Invalid webhook URL"


class WebhookEndpointIsDisabled(Conflict):
    code = "webhook-endpoint-disabled"
    title = "The webhook endpoint is disabled"
