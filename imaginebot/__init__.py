"""imaginebot: Midjourney-style /imagine for a class Discord server, on the school's own GPU."""

__version__ = "0.1.0"
