"""Local stand-ins that speak the real wire protocols of Graph and Event Grid."""
