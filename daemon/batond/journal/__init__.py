"""What survives a restart: the SQLite journal (one facade over db, writer and
queries) and the anomaly model's state file."""
