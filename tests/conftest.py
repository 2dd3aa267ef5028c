"""Shared pytest setup."""

from kubecluster import kube_cluster  # noqa: F401  (session-scoped real control plane)
