"""Deployment: exporting and serving the student."""
