"""The FastAPI service: REST API under /api/v1, the Gradio web UI at /, one job store for both.

Start at ``app.create_app``; ``run.serve`` binds it with uvicorn.
"""
