"""Run folders on disk: the checkpoint format and its schema, the one resume rule, loading.

Everything that reads or writes a run folder's files goes through here, so a run trained by any
command (``train``, ``morph``, ``batch``) is read the same way by every other.
"""

from __future__ import annotations

from flowgif.store.checkpoint import (
    CHECKPOINT,
    FORMAT,
    LIVE,
    checkpoint_config,
    checkpoint_problem,
    end_meta,
    ink_tensor,
    load_checkpoint,
    loss_csv_text,
    save_checkpoint,
    write_loss_csv,
)
from flowgif.store.folders import (
    MARKER,
    adopt,
    check_marked,
    check_new_run_dir,
    claim,
    claim_marked,
    find_latest_run,
    hold,
    in_use,
    let_go,
    new_run_dir,
    read_marker,
    release,
    safe_name,
)
from flowgif.store.resume import (
    RESUMABLE,
    budget_spent,
    budget_text,
    changed,
    fraction,
    resume_problem,
)
from flowgif.store.run import Run, load_run

__all__ = [
    "CHECKPOINT",
    "FORMAT",
    "LIVE",
    "MARKER",
    "RESUMABLE",
    "Run",
    "adopt",
    "budget_spent",
    "budget_text",
    "changed",
    "check_marked",
    "check_new_run_dir",
    "checkpoint_config",
    "checkpoint_problem",
    "claim",
    "claim_marked",
    "end_meta",
    "find_latest_run",
    "fraction",
    "hold",
    "in_use",
    "ink_tensor",
    "let_go",
    "load_checkpoint",
    "load_run",
    "loss_csv_text",
    "new_run_dir",
    "read_marker",
    "release",
    "resume_problem",
    "safe_name",
    "save_checkpoint",
    "write_loss_csv",
]
