"""Listening: what a patient's reply means (opt-out, opt-in, help, a campaign keyword, a question),
consent per number, delivery status, and the hand-offs a person on the care team answers."""
