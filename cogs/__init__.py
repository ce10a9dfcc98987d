"""discord.py cogs: thin Discord UI over the imaginebot library."""
