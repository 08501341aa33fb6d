"""Monitoring tables: clinical entries, dosing, alerts, REMS forms."""
