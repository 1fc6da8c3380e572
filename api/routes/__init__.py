"""HTTP routers: parse input, call a service, map the result."""
