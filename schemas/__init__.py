"""Pydantic models for everything that crosses a boundary: catalog, configs, records, reports."""
