"""What an incoming SMS makes happen: opt-out and back in, the resend key, ticket comments."""
from mpm.models import Sms


def act_on_incoming(sms: Sms) -> None:
    """Apply the reply rules to a stored incoming message (filled in by the replies work)."""
    return None
