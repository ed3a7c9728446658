"""``ringx_drivers`` (this folder, bench/, installed and imported under that name): the drivers that measure ring
vs ringX attention, their points, sweeps and measurement core."""
