"""The HTTP service (DESIGN §11): ``create_app`` builds the ASGI application over a ``Ledger``."""
