"""The running daemon: composition root, pipeline, operator facade, HTTP API, sd_notify."""
