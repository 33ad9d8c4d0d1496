"""Searchers: find the compute-optimal graph for a task (topology, models, budgets)."""
