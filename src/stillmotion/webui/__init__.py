"""The Gradio web UI (``build_ui``), mounted at ``/`` by the server."""
