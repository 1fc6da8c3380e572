"""The OpenAI-compatible API (``/v1``): wire models (``protocol``), the
mapping onto the assistant (``serving``) and the routes (``router``)."""
