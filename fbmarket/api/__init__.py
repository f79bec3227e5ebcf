"""HTTP API and web page."""
