"""Plain-Python ML core of ftlab. Nothing in this package imports dagster."""
