"""Effects: quantities computed on posterior draws (estimates by level, standardized estimates, ICCs)."""
