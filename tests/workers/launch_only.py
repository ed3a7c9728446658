"""MPI worker: start the process group as ``launch.init()`` decides, print where this rank stands, stop."""

from ringx import launch

if __name__ == "__main__":
    ctx = launch.init(timeout_s=60)
    print(f"rank {ctx.rank}/{ctx.world_size} on {ctx.device} with {ctx.backend}", flush=True)
    launch.finalize()
