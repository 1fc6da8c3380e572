"""Identity: tenants, users, groups and API keys (``sirocco.auth.keys``).

The API authenticates every request but health with a key; the key's user,
groups and tenant become the caller whose ACL filters retrieval.
"""
