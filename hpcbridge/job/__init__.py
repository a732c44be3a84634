"""The login node: a job spec validated, rendered into a batch script, and submitted."""
