"""Screens over the main view: message detail, confirmations, help."""
