"""Results: the fit object, tables, and exports."""
