"""Eligibility: resolves one person across partners and applies the versioned policy with reasons."""
