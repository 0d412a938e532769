"""The job service: the one submission and read path under both the REST API and the web UI.

``job_service.JobService`` (admission, validation, submit, plan, the public view of a job),
``schemas`` (the public contract, pydantic models) and ``validation`` (pydantic errors as one plain line).
Dependencies point one way: ``server`` and ``webui`` import this package; it imports neither.
"""
