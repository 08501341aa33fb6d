"""Billing tables: fee schedule, coverage, estimates, charges, claims."""
