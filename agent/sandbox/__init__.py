"""The sandbox: what happens between a job spec and the user's exec."""
