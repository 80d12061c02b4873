"""Promotion pipeline for GitOps secrets: intent -> rendered -> encrypted -> git."""

__version__ = "0.1.0"
