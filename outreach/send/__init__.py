"""Sending: claim outbox rows, re-check consent and the window, take a token from the global rate
limiter, call the provider, record the outcome; and the sweeper that recovers what a crash left."""
