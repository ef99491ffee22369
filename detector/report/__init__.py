"""``detector analyze --report report.html``: a self-contained HTML report (no network fetch)."""
