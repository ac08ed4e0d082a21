"""Revision files (alembic loads them by path; the package makes setuptools ship them)."""
