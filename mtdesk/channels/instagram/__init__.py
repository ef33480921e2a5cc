"""Instagram: inbound (webhook items → events) and outbound (limit, send body)."""
