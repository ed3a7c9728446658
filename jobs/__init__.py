"""``ringx_jobs`` (this folder, jobs/, installed and imported under that name).

The suite's data, read at run time: machine profiles (profiles/), sweep files (sweeps/) and node checks
(checks/). Installed, this folder is the package ``ringx_jobs`` (pyproject.toml); code finds it through
costmodel.machine.JOBS, in a checkout and installed alike."""
