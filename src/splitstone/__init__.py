"""splitstone: a modular monolith for SaaS backends that is ready to be split."""

__version__ = "0.1.0"
