"""The workers that run stored jobs: ``worker`` (one process, one engine, a job at a time), ``supervisor``
(keeps a worker process alive), ``local_pool`` / ``ray_pool`` (one worker per GPU here, or per GPU of a Ray
cluster; ``pools.make_pool`` picks), ``lease`` (renews the running job's lease), ``job_files`` (inputs and
published outputs), ``worker_state`` (what a worker tells the API about its device), ``disk_space``.
"""
