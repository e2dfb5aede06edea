"""Business modules. Each is a top-level package; only its `api` module is public to the others."""
