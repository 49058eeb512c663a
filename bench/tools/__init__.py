"""Developer tools that check the suite itself (not part of a run): e.g. the bit-identity check.

May import from every layer; nothing in the suite imports from here.
"""
