"""Runnable examples for users of the presence service."""
