"""Durable jobs: the store (SQLAlchemy Core), the state machine, the worker process and its supervisor.

Start at store.py (the API the server uses) and supervisor.py (how the worker is run and watched).
"""
