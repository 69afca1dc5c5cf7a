"""Fake ``sbatch``/``scancel``/``srun`` on PATH, for submission tests without a cluster.

``sbatch`` numbers jobs from 5001 and keeps a copy of every script it is given
(``$FAKE_SLURM/script-<id>.sh``); with ``FAKE_SBATCH_FAIL_AT=<id>`` it refuses that job the way
Slurm does (``FAKE_SBATCH_MESSAGE`` replaces the message). ``scancel`` records what it was asked to
cancel; ``srun`` only exists (submitit checks for it).
"""

from __future__ import annotations

import os
from pathlib import Path

FAKE_SBATCH = """#!/bin/sh
n=$(cat "$FAKE_SLURM/count" 2>/dev/null || echo 5000)
n=$((n+1)); echo $n > "$FAKE_SLURM/count"
cp "$1" "$FAKE_SLURM/script-$n.sh"
if [ -n "$FAKE_SBATCH_FAIL_AT" ] && [ "$n" = "$FAKE_SBATCH_FAIL_AT" ]; then
  echo "${FAKE_SBATCH_MESSAGE:-sbatch: error: Batch job submission failed: Invalid qos specification}" >&2; exit 1
fi
echo "Submitted batch job $n"
"""
FAKE_SCANCEL = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/scancel"
"""


def install_fake_slurm(tmp_path: Path, monkeypatch, sbatch: str = FAKE_SBATCH) -> Path:
    """Fake sbatch/scancel/srun first on PATH; returns the directory where they record calls."""
    bin_dir, state = tmp_path / "bin", tmp_path / "fake-slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("sbatch", sbatch), ("scancel", FAKE_SCANCEL), ("srun", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    return state


def write_profile(tmp_path: Path, base: str = "dev", **changes) -> Path:
    """A site profile ``site.yaml`` in ``tmp_path``: a shipped one with ``changes``."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    profile = yaml.safe_load((repo / "slurm" / "profiles" / f"{base}.yaml").read_text())
    profile.update(name="site", **changes)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path
