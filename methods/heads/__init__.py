"""Every module here registers entries; the registry imports them all."""
