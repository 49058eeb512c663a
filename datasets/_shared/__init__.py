"""The bottom layer: what ``datasets``, ``methods`` and ``bench`` all use (the registry class, the
reachability probe). It imports nothing from the project, so every layer may import it.
"""
