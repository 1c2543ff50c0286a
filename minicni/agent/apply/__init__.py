"""Kernel appliers: each reads what is in place, diffs it against the plan and changes only what
differs, reporting failures per item."""
