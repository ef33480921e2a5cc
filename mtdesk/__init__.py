"""MT Desk: an AI customer messaging gateway for Messenger, Instagram and WhatsApp."""

__version__ = "0.1.0"
