"""Durable jobs: ``store/`` keeps them (the only SQL) and ``workers/`` runs them.

Start at store/job_store.py (the API the service uses) and workers/worker.py (how a job is run).
"""
