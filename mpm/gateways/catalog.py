"""The gateways this product knows, in the fixed priority order of sending."""

PRIORITY = ("africastalking", "textbee", "viber", "android")

GATEWAY_LABELS = {
    "africastalking": "AfricasTalking",
    "textbee": "TextBee SMS Gateway",
    "viber": "Viber Messaging",
    "android": "Android Gateway (deprecated)",
}
