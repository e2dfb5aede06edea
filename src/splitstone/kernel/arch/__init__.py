"""Architecture as code: the import rules checked against the source, and the module diagram.

The kernel imports no module here either: callers pass the module declarations in.
"""
