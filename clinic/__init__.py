"""Scheduling and supervised-session monitoring for ketamine and esketamine clinics."""
