"""Helpers of the infer stage: the response cache and cost accounting."""
