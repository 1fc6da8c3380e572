"""Clients of Sirocco's HTTP API. They talk to a running server over HTTP
only and import nothing of the server's code, so they can be used from any
application with just their own dependencies (``api.client.langchain``:
``pip install 'sirocco[langchain]'``)."""
