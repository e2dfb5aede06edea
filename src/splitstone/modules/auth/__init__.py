"""Auth: users, organizations, roles, sessions and API keys. Other modules import only `.api`."""
