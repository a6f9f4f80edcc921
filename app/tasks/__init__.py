"""Tasks: their state, where it is kept, and the manager that runs them on worker processes."""
