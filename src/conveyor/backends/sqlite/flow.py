"""Flows of the SQLite backend: where limited jobs wait, and the flow-aware part of a claim.

Runs on the database thread inside the caller's transaction, like `ops`. The model (shared with
the Redis scripts, see docs/architecture.md "Flow control"):

- A *gate* (`gates.py`) is a queue-scoped limit: a rate (GCRA), a concurrency cap or a
  circuit breaker, with its state.
- A job's *flow* is the JSON array of its gate names. Ready jobs of a flow wait in their own
  index line; table ``flows`` keeps each flow's head score and whether it is set aside
  (``blocked_until`` a time, or ``wait_gate`` until a concurrency slot or breaker probe frees).
- A claim merges unlimited jobs and the heads of claimable flows in (priority, FIFO) order; a
  flow takes as many jobs as its gates allow, and a refused flow is set aside, never scanned
  again until its gate can allow it. Nothing is claimed that a gate refuses.

The code: `flow_state.py` (enqueue side, heads, jobs leaving ``active``) and `flow_claim.py`
(the claim side); this module names them all.
"""

from __future__ import annotations

from .flow_claim import FETCH_MORE, MAX_REFUSED, FlowClaim, has_flows, next_permitted
from .flow_state import SCORE_SHIFT, refresh_heads, settle, store_gates, unwait

INF = float("inf")

__all__ = [
    "FETCH_MORE",
    "INF",
    "MAX_REFUSED",
    "SCORE_SHIFT",
    "FlowClaim",
    "has_flows",
    "next_permitted",
    "refresh_heads",
    "settle",
    "store_gates",
    "unwait",
]
