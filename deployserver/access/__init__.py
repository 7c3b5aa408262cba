"""Who may do what: bearer tokens, users and password logins, the token cache, login limits."""
