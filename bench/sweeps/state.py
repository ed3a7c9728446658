"""Where a sweep stands: its submissions (manifest) and the state of every point."""

from __future__ import annotations

import json

from .sweep import Sweep


def manifest(sw: Sweep) -> dict:
    path = sw.dir / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"campaign": sw.campaign, "submissions": []}


def save_manifest(sw: Sweep, m: dict) -> None:
    sw.dir.mkdir(parents=True, exist_ok=True)
    (sw.dir / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")


def point_states(sw: Sweep, env: dict | None = None) -> dict[str, list[tuple[object, str]]]:
    """job name -> [(point, state)] with state done, failed, running, pending or missing."""
    recorded = sw.store.done()
    subs = manifest(sw)["submissions"]
    live: dict[str, str] = {}
    for s in subs:  # the latest submission of each job decides running/pending
        live[s["job"]] = s["job_id"]
    job_states = sw.scheduler.states(live, env)
    out = {}
    for job in sw.jobs:
        rows = []
        for key, pt in sw.keys(job).items():
            st = recorded.get(key)
            if st == "ok":
                rows.append((pt, "done"))
            elif st == "failed":
                rows.append((pt, "failed"))
            elif job_states.get(job.name) in ("RUNNING", "COMPLETING"):
                rows.append((pt, "running"))
            elif job_states.get(job.name) in ("PENDING", "CONFIGURING", "REQUEUED"):
                rows.append((pt, "pending"))
            else:
                rows.append((pt, "missing"))
        out[job.name] = rows
    return out


def preflight_state(sw: Sweep, job: str, job_id: str | None = None) -> str:
    """'preflight ok' or 'preflight FAILED: why' for a job's latest preflight (its latest submission's when the
    manifest names one); '' when none ran."""
    d = sw.dir / "preflight"
    if job_id:
        paths = [d / f"{job}-{job_id}.json"]
    else:
        paths = sorted(d.glob(f"{job}-*.json"), key=lambda p: p.stat().st_mtime)[-1:] if d.is_dir() else []
    if not paths or not paths[0].exists():
        return ""
    try:
        rec = json.loads(paths[0].read_text())
    except (OSError, json.JSONDecodeError):
        return f"preflight record unreadable ({paths[0]})"
    if rec.get("ok"):
        return "preflight ok"
    bad = next((c for c in rec.get("checks", []) if not c.get("ok")), {})
    return f"preflight FAILED: {bad.get('check', '?')}: {bad.get('detail', '')} ({paths[0].name})"
