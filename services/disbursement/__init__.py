"""Disbursement: exactly one payment per person per cycle, through a provider adapter, reconciled."""
