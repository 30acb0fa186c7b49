"""Reporting: the deduplicated number of people reached, its breakdowns, metrics and a dashboard."""
