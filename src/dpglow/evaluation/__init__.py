"""Evaluation: measures of density-model quality, utility and privacy."""
