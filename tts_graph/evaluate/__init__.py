"""Evaluation: tasks, scorers, the crash-safe results store and the runner."""
