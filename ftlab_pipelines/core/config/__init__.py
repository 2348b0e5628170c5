"""Lab configuration (one described pydantic model per stage), runtime settings and hashing."""
