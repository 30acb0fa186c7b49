"""Intake: authenticates CSO partners, validates batch rows, stores them and publishes one event per row."""
