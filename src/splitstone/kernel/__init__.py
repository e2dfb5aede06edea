"""The kernel: what makes the architecture real. It imports no business module."""
