"""Server-side timeline of a hot CTI's turns, for ``trace_hot.py --server-trace``.

Patches one benchmark database's ``ledger_hot_wait`` and ``ledger_record_guarded`` (from their
own text, as the server holds it) with inserts of ``clock_timestamp()`` into an unlogged
table, then splits each turn into its phases. Diagnostic only: the inserts slow every wait.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

import psycopg

TRACE_TABLE = (
    "CREATE UNLOGGED TABLE IF NOT EXISTS hot_trace (pid int, kind text, t0 float8, t1 float8, "
    "t2 float8, t3 float8, t4 float8, n int, rounds int)"
)


def ep(expr: str) -> str:
    """A timestamp as float seconds, in SQL."""
    return f"extract(epoch from {expr})::float8"


def patch(url: str) -> None:
    """Adds the trace inserts to the database's hot-wait procedure and guarded write."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TRACE_TABLE)
        wait = conn.execute("select pg_get_functiondef('ledger_hot_wait'::regproc)").fetchone()[0]
        guarded = conn.execute(
            "select pg_get_functiondef('ledger_record_guarded'::regproc)"
        ).fetchone()[0]
        # hot_wait: t0 start, t1 posted, t2 locked (answer or turn), t3 gates done, t4 end
        w = wait.replace(
            "; BEGIN INSERT INTO",
            "; tr0 timestamptz := clock_timestamp(); tr1 timestamptz; "
            "tr2 timestamptz; tr3 timestamptz; nrounds int := 0; BEGIN INSERT INTO",
            1,
        )
        w = w.replace("COMMIT; IF p_gated", "COMMIT; tr1 := clock_timestamp(); IF p_gated", 1)
        w = re.sub(
            r"FOR round IN 1\.\.(\d+) LOOP ", r"FOR round IN 1..\1 LOOP nrounds := round; ", w
        )
        answered = (
            "IF FOUND THEN r_kinds := 'a'; r_states := ARRAY[answer]; IF pg_try_advisory_lock("
        )
        trace_a = (
            "IF FOUND THEN INSERT INTO hot_trace VALUES (pg_backend_pid(), 'answered', "
            f"{ep('tr0')}, {ep('tr1')}, {ep('clock_timestamp()')}, NULL, NULL, NULL, nrounds); "
            "r_kinds := 'a'; r_states := ARRAY[answer]; IF pg_try_advisory_lock("
        )
        assert w.count(answered) == 2
        w = w.replace(answered, trace_a)
        w = w.replace(
            'END LOOP; DELETE FROM "public"."ledger_hot_answers"',
            'END LOOP; tr2 := clock_timestamp(); DELETE FROM "public"."ledger_hot_answers"',
            1,
        )
        w = w.replace(
            "END LOOP; SET LOCAL lock_timeout = '10s'; WITH taken",
            "END LOOP; tr3 := clock_timestamp(); SET LOCAL lock_timeout = '10s'; WITH taken",
            1,
        )
        w = re.sub(
            r"; END \$procedure\$",
            "; INSERT INTO hot_trace VALUES (pg_backend_pid(), 'turn', "
            f"{ep('tr0')}, {ep('tr1')}, {ep('tr2')}, {ep('tr3')}, {ep('clock_timestamp()')}, "
            "coalesce(cardinality(taken), 0), nrounds); END $procedure$",
            w,
        )
        for marker in ("'turn'", "tr3 :=", "tr2 :=", "tr1 :="):
            assert marker in w, (marker, w)
        conn.execute(w)
        # guarded: t0 start, t1 locked, t2 end (before commit)
        g = guarded.replace(
            "overtaken bigint := 0; BEGIN ",
            "overtaken bigint := 0; tr0 timestamptz := clock_timestamp(); tr1 timestamptz; BEGIN ",
            1,
        )
        g = g.replace(
            "IF held THEN PERFORM pg_advisory_unlock_all(); END IF; ",
            "tr1 := clock_timestamp(); IF held THEN PERFORM pg_advisory_unlock_all(); END IF; ",
            1,
        )
        g = g.replace(
            "RETURN; END IF; IF cardinality(answer_ids)",
            "INSERT INTO hot_trace VALUES (pg_backend_pid(), 'overtaken', "
            f"{ep('tr0')}, {ep('tr1')}, {ep('clock_timestamp()')}, NULL, NULL, cardinality(ids), "
            "NULL); RETURN; END IF; IF cardinality(answer_ids)",
            1,
        )
        g = g.replace(
            "END IF; END $function$",
            "END IF; INSERT INTO hot_trace VALUES (pg_backend_pid(), "
            "CASE WHEN held THEN 'write_held' ELSE 'write' END, "
            f"{ep('tr0')}, {ep('tr1')}, {ep('clock_timestamp()')}, NULL, NULL, cardinality(ids), "
            "NULL); END $function$",
        )
        assert g.count("hot_trace") == 2, g
        conn.execute(g)


def analyse(url: str) -> dict[str, Any]:
    """Per turn: the phases, medians in ms; then truncates the trace."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, kind, t0, t1, t2, t3, t4, n, rounds FROM hot_trace"
        ).fetchall()
        conn.execute("TRUNCATE hot_trace")
    turns = sorted((r for r in rows if r[1] == "turn"), key=lambda r: r[4])
    writes = sorted((r for r in rows if r[1].startswith("write")), key=lambda r: r[2])
    answered = [r for r in rows if r[1] == "answered"]
    over = [r for r in rows if r[1] == "overtaken"]
    # match each turn with the first write by the same pid after its t4
    phases: dict[str, list[float]] = {
        "gate_wait": [],
        "turn_read": [],
        "client_decide_rt": [],
        "write_exec": [],
        "commit_handoff": [],
        "cycle": [],
        "taken": [],
        "post_rt": [],
    }
    by_pid: dict[int, list[Any]] = {}
    for w in writes:
        by_pid.setdefault(w[0], []).append(w)
    for k, t in enumerate(turns):
        phases["gate_wait"].append((t[5] - t[4]) * 1e3)
        phases["turn_read"].append((t[6] - t[5]) * 1e3)
        phases["taken"].append(t[7])
        phases["post_rt"].append((t[3] - t[2]) * 1e3)
        following = [w for w in by_pid.get(t[0], []) if w[2] >= t[6]]
        if following:
            w = following[0]
            phases["client_decide_rt"].append((w[2] - t[6]) * 1e3)
            phases["write_exec"].append((w[4] - w[2]) * 1e3)
            if k + 1 < len(turns):
                phases["commit_handoff"].append((turns[k + 1][4] - w[4]) * 1e3)
        if k + 1 < len(turns):
            phases["cycle"].append((turns[k + 1][4] - t[4]) * 1e3)
    out = {
        name: (statistics.median(v), statistics.mean(v), len(v)) for name, v in phases.items() if v
    }
    out["answered_rounds_mean"] = (
        statistics.mean(r[8] for r in answered) if answered else 0,
        0,
        len(answered),
    )
    out["turn_rounds_mean"] = (statistics.mean(r[8] for r in turns) if turns else 0, 0, len(turns))
    out["overtaken"] = (len(over), 0, 0)
    return out
