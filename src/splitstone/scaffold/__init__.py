"""`splitstone new-module`: a new business module in the house shape, registered and tested.

It lives outside the kernel because it edits the product itself: the composition root, the topologies,
the docs and the suites that cover every route. It reads the project's files and imports none of them.
"""
