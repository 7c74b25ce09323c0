"""The budget authority: reservations against caps, rate limits, settlement, alerts."""
