"""HTTP layer: schemas, dependencies, error shape and thin routes."""
