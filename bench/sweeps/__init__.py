"""Campaigns of jobs from one sweep file: spec (parse, validate), plan (estimates, scripts),
state (submissions, point states), commands (the CLI); profiles and slurm are the machine plumbing."""

from .spec import Job, Sweep, SweepError, load

__all__ = ["Job", "Sweep", "SweepError", "load"]
