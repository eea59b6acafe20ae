"""A small Event Grid webhook subscriber for ``Presence.Changed`` events."""
