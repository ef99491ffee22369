"""``detector bench``: this project's CPU and GPU backends beside the peer tools, on one capture,
in one run; JSON, a Markdown table and a chart."""
