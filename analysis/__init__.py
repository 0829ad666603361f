"""Analysis: metrics from records, the cost model, the sizing solver and the report."""
