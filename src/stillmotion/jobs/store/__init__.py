"""The job store: the only SQL in stillmotion. ``job_store.JobStore`` is the API; below it ``db`` (one engine,
one ``transaction()``, driver errors translated into stillmotion's own), ``schema`` (the tables),
``migrations`` (numbered, applied at open) and ``states`` (the allowed moves and the one ``transition()``).
"""
