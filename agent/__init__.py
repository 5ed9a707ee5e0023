"""Ladder's agent and its faces (CLI, chat, MCP).

Ladder runs offline: nothing may phone home. These are read when huggingface_hub and Gradio are
imported, so they are set here, before any face imports either.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
