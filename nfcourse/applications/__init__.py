"""Flows at work: applications of the course's flows (chapters 11 and 12)."""
