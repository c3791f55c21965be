#!/usr/bin/env python3
"""Writes tests/histories/*.jsonl from compact descriptions (run from the repo root).

Each history is a list of steps: ("i", process, op) invokes, ("ok"|"fail"|"info",
process, op) completes, ("final",) switches later invocations to the final phase.
Ops: ("w", key, value), ("r", key, value), ("cas", key, expected, value),
("d", key), ("app", pkey, seq), ("scan", start, end, count). Times are 10 ns apart.
The generated files are plain JSON lines; tests/checkers.rs holds the table of
what each must produce.
"""
import json, os

def op(t, invoke):
    f = t[0]
    if f == "w": return {"f": "write", "key": t[1], "value": t[2]}
    if f == "r": return {"f": "read", "key": t[1], "value": None if invoke else t[2]}
    if f == "cas": return {"f": "cas", "key": t[1], "expected": t[2], "value": t[3]}
    if f == "d": return {"f": "delete", "key": t[1]}
    if f == "app": return {"f": "append", "pkey": t[1], "seq": None if invoke else t[2]}
    if f == "scan": return {"f": "scan", "start": t[1], "end": t[2], "count": None if invoke else t[3]}
    raise ValueError(f)

def render(steps):
    out, phase, idx, open_phase = [], "main", 0, {}
    for s in steps:
        if s[0] == "final":
            phase = "final"; continue
        kind, p, o = s
        if kind == "i":
            open_phase[p] = phase
            ph = phase
        else:
            ph = open_phase.pop(p)
        e = {"index": idx, "type": "invoke" if kind == "i" else kind, "process": p,
             "time_ns": (idx + 1) * 10, "op": op(o, kind != "ok"), "phase": ph}
        if kind in ("fail", "info"):
            e["error"] = "timeout" if kind == "info" else "unavailable"
        out.append(json.dumps(e, separators=(",", ":")))
        idx += 1
    return "\n".join(out) + "\n"

def seq(p, o, kind="ok"):
    """Invoke then complete, back to back."""
    return [("i", p, o), (kind, p, o)]

H = {}

# ---- linearizability ----
H["lin_valid_sequential"] = seq(1, ("w","k","a")) + seq(2, ("r","k","a")) + seq(1, ("w","k","b")) + \
    seq(2, ("r","k","b")) + seq(3, ("d","k")) + seq(2, ("r","k",None)) + seq(3, ("scan","a","z",0)) + \
    seq(4, ("cas","k",None,"c")) + seq(2, ("r","k","c"))
# Two concurrent writes; a read overlapping both sees a, a later read sees a:
# b must be linearized before a although b completed last.
H["lin_valid_concurrent"] = [("i",1,("w","k","a")), ("i",2,("w","k","b")), ("i",3,("r","k","a")),
    ("ok",1,("w","k","a")), ("ok",3,("r","k","a")), ("ok",2,("w","k","b"))] + seq(3, ("r","k","a"))
# A read that returns a value whose write is still in flight is fine.
H["lin_valid_read_in_flight"] = [("i",1,("w","k","a")), ("i",2,("r","k","a")), ("ok",2,("r","k","a")),
    ("ok",1,("w","k","a"))]
# An info write may take effect long after its timeout, after a later ok write.
H["lin_valid_info_late"] = [("i",1,("w","k","a")), ("info",1,("w","k","a"))] + seq(2, ("w","k","b")) + \
    seq(3, ("r","k","b")) + seq(3, ("r","k","a"))
# An info write that never takes effect.
H["lin_valid_info_never"] = seq(1, ("w","k","a")) + [("i",2,("w","k","b")), ("info",2,("w","k","b"))] + \
    seq(3, ("r","k","a")) + [("i",4,("cas","k","a","c")), ("info",4,("cas","k","a","c"))] + seq(3, ("r","k","a"))
# A read whose process timed out says nothing; a failed write never happened.
H["lin_valid_fail_and_info_reads"] = seq(1, ("w","k","a")) + seq(2, ("w","k","b"), "fail") + \
    [("i",3,("r","k",None)), ("info",3,("r","k",None))] + seq(3, ("r","k","a"))
H["lin_valid_cas"] = seq(1, ("cas","k",None,"a")) + seq(2, ("cas","k","a","b")) + seq(3, ("cas","k","a","c"), "fail") + \
    seq(3, ("cas","k",None,"d"), "fail") + seq(1, ("r","k","b")) + seq(4, ("d","k")) + seq(4, ("cas","k",None,"e")) + seq(1, ("r","k","e"))
H["lin_stale_read"] = seq(1, ("w","k","a")) + seq(2, ("w","k","b")) + seq(3, ("r","k","a"))
H["lin_lost_write"] = seq(1, ("w","k","a")) + seq(2, ("r","k",None))
H["lin_phantom_read"] = seq(1, ("w","k","a")) + seq(2, ("r","k","zz"))
H["lin_failed_write_read"] = seq(1, ("w","k","a")) + seq(2, ("w","k","b"), "fail") + seq(3, ("r","k","b"))
# The read of b completes before the write of b is invoked.
H["lin_future_read"] = seq(1, ("w","k","a")) + seq(2, ("r","k","b")) + seq(3, ("w","k","b"))
H["lin_info_read_then_unread"] = seq(1, ("w","k","a")) + [("i",2,("w","k","b")), ("info",2,("w","k","b"))] + \
    seq(3, ("r","k","b")) + seq(3, ("r","k","a"))
H["lin_cas_wrong_expected"] = seq(1, ("w","k","a")) + seq(2, ("cas","k","a","b")) + seq(3, ("cas","k","a","c")) + seq(1, ("r","k","c"))
H["lin_cas_absent_but_exists"] = seq(1, ("w","k","a")) + seq(2, ("cas","k",None,"b"))
H["lin_cas_lost"] = seq(1, ("w","k","a")) + seq(2, ("cas","k","a","b")) + seq(3, ("r","k","a"))
H["lin_delete_undone"] = seq(1, ("w","k","a")) + seq(2, ("d","k")) + seq(3, ("r","k","a"))
# Key j is fine, key k is stale among noise: the report must name k.
H["lin_two_keys_one_bad"] = seq(1, ("w","j","x")) + [("i",1,("w","k","a")), ("i",2,("r","j","x")), ("ok",1,("w","k","a")),
    ("ok",2,("r","j","x"))] + seq(1, ("w","k","b")) + seq(4, ("w","j","y")) + seq(2, ("r","k","a")) + seq(2, ("r","j","y"))

# ---- durability ----
H["dur_valid"] = seq(1, ("w","k","a")) + seq(2, ("w","k","b")) + seq(1, ("w","j","x")) + seq(2, ("d","j")) + \
    [("i",3,("w","m","p")), ("info",3,("w","m","p"))] + seq(4, ("w","n","q")) + [("i",3,("w","n","r")), ("info",3,("w","n","r"))] + \
    [("final",)] + seq(9, ("r","k","b")) + seq(9, ("r","j",None)) + seq(9, ("r","m",None)) + seq(9, ("r","n","r"))
# Concurrent writes may end in either order, whatever the completion order.
H["dur_valid_concurrent"] = [("i",1,("w","k","a")), ("i",2,("w","k","b")), ("ok",1,("w","k","a")), ("ok",2,("w","k","b"))] + \
    [("i",3,("w","j","c")), ("i",4,("d","j")), ("ok",4,("d","j")), ("ok",3,("w","j","c"))] + \
    [("final",)] + seq(9, ("r","k","a")) + seq(9, ("r","j",None))
H["dur_lost_write_absent"] = seq(1, ("w","k","a")) + seq(1, ("w","j","b")) + [("final",)] + seq(9, ("r","k","a")) + seq(9, ("r","j",None))
H["dur_lost_write_older"] = seq(1, ("w","k","a")) + seq(2, ("w","k","b")) + seq(1, ("w","k","c")) + [("final",)] + seq(9, ("r","k","a"))
H["dur_failed_write_final"] = seq(1, ("w","k","a")) + seq(2, ("w","k","b"), "fail") + [("final",)] + seq(9, ("r","k","b"))
H["dur_info_read_then_lost"] = seq(1, ("w","k","a")) + [("i",2,("w","k","b")), ("info",2,("w","k","b"))] + \
    seq(3, ("r","k","b")) + [("final",)] + seq(9, ("r","k","a"))
# a and b are concurrent, but a later read still sees b, so b came after a.
H["dur_lost_write_read_evidence"] = [("i",1,("w","k","a")), ("i",2,("w","k","b")), ("ok",1,("w","k","a")), ("ok",2,("w","k","b"))] + \
    seq(3, ("r","k","b")) + [("final",)] + seq(9, ("r","k","a"))
# The read of b starts while a is still in flight: a may come after b.
H["dur_valid_read_then_overwritten"] = [("i",1,("w","k","a")), ("i",2,("w","k","b")), ("ok",2,("w","k","b")), ("i",3,("r","k","b")),
    ("ok",3,("r","k","b")), ("ok",1,("w","k","a"))] + [("final",)] + seq(9, ("r","k","a"))
H["dur_delete_resurrected"] = seq(1, ("w","k","a")) + seq(2, ("d","k")) + [("final",)] + seq(9, ("r","k","a"))
# The partition holding k never comes back: every final read of k fails, so
# its two acknowledged writes and its acknowledged delete are unreachable
# (j's final read answers and is judged as usual).
H["dur_unreachable_partition"] = seq(1, ("w","k","a")) + seq(2, ("w","k","b")) + seq(1, ("d","k")) + seq(2, ("w","j","c")) + \
    [("final",)] + seq(9, ("r","k",None), "fail") + seq(9, ("r","k",None), "fail") + seq(9, ("r","k",None), "info") + seq(9, ("r","j","c"))
# A key whose final read failed once, then answered: reachable (the failed
# final read still fails liveness, which judges every final-phase answer).
H["dur_valid_final_retry"] = seq(1, ("w","k","a")) + [("final",)] + seq(9, ("r","k",None), "fail") + seq(9, ("r","k","a"))

# ---- sequence ----
H["seq_valid"] = seq(1, ("app","p",1)) + seq(2, ("app","p",2)) + \
    [("i",1,("app","p",None)), ("i",2,("app","p",None)), ("ok",2,("app","p",4)), ("ok",1,("app","p",3))] + \
    [("i",3,("app","p",None)), ("info",3,("app","p",None))] + seq(1, ("app","p",6)) + seq(2, ("app","p",7), "fail") + \
    seq(2, ("app","p",7)) + seq(4, ("app","q",10)) + seq(4, ("app","q",11))
H["seq_valid_open_fills_gap"] = seq(1, ("app","p",1)) + [("i",2,("app","p",None))] + seq(1, ("app","p",3))
H["seq_duplicate"] = seq(1, ("app","p",1)) + seq(2, ("app","p",2)) + seq(1, ("app","p",2))
H["seq_duplicate_concurrent"] = [("i",1,("app","p",None)), ("i",2,("app","p",None)), ("ok",1,("app","p",1)), ("ok",2,("app","p",1))]
H["seq_skip"] = seq(1, ("app","p",1)) + seq(2, ("app","p",2)) + seq(1, ("app","p",4))
H["seq_skip_fail_is_no_excuse"] = seq(1, ("app","p",1)) + [("i",2,("app","p",None)), ("fail",2,("app","p",None))] + seq(1, ("app","p",3))
# The info append starts after 3 was acknowledged, so it cannot have taken 2.
H["seq_skip_info_too_late"] = seq(1, ("app","p",1)) + seq(1, ("app","p",3)) + [("i",2,("app","p",None)), ("info",2,("app","p",None))] + seq(1, ("app","p",4))
H["seq_order"] = seq(1, ("app","p",1)) + seq(1, ("app","p",3)) + seq(2, ("app","p",2))

# ---- liveness ----
H["live_valid"] = seq(1, ("w","k","a")) + [("i",2,("w","k","b")), ("info",2,("w","k","b"))] + [("final",)] + \
    seq(9, ("r","k","b")) + seq(9, ("cas","k","zz","c"), "fail")
H["live_open_at_end"] = seq(1, ("w","k","a")) + [("i",2,("w","k","b"))] + [("final",)] + seq(9, ("r","k","a"))
H["live_final_timeout"] = seq(1, ("w","k","a")) + [("final",)] + [("i",9,("r","k",None)), ("info",9,("r","k",None))]

os.makedirs("tests/histories", exist_ok=True)
for name, steps in H.items():
    with open(f"tests/histories/{name}.jsonl", "w") as f:
        f.write(render(steps))

# ---- malformed files (hand-written lines) ----
def line(i, t, p, ts, o, **kw):
    e = {"index": i, "type": t, "process": p, "time_ns": ts, "op": o}
    e.update(kw)
    return json.dumps(e, separators=(",", ":"))
W = {"f": "write", "key": "k", "value": "a"}
R = {"f": "read", "key": "k", "value": None}
bad = {
    "bad_json": [line(0,"invoke",1,10,W), line(1,"ok",1,20,W), '{"index":2,"type":"invoke",,}'],
    "bad_truncated": [line(0,"invoke",1,10,W), line(1,"ok",1,20,W), '{"index":2,"type":"inv'],
    "bad_completion_without_invocation": [line(0,"invoke",1,10,W), line(1,"ok",1,20,W), line(2,"ok",2,30,W)],
    "bad_two_open": [line(0,"invoke",1,10,W), line(1,"invoke",2,20,R), line(2,"invoke",1,30,R)],
    "bad_time_backwards": [line(0,"invoke",1,10,W), line(1,"ok",1,20,W), line(2,"invoke",1,15,R)],
    "bad_op_mismatch": [line(0,"invoke",1,10,W), line(1,"ok",1,20,{"f":"write","key":"other","value":"a"})],
    "bad_kind_mismatch": [line(0,"invoke",1,10,W), line(1,"ok",1,20,{"f":"read","key":"k","value":"a"})],
    "bad_index": [line(0,"invoke",1,10,W), line(2,"ok",1,20,W)],
    "bad_type": [line(0,"invoke",1,10,W), line(1,"done",1,20,W)],
    "bad_missing_field": [line(0,"invoke",1,10,W), '{"index":1,"type":"ok","process":1,"op":{"f":"write","key":"k","value":"a"}}'],
    "bad_append_without_seq": [line(0,"invoke",1,10,{"f":"append","pkey":"p","seq":None}), line(1,"ok",1,20,{"f":"append","pkey":"p","seq":None})],
    "bad_after_comment": ["# why: comments and blank lines count as lines", "", line(0,"invoke",1,10,W), line(1,"fail",2,20,W)],
}
for name, lines in bad.items():
    text = "\n".join(lines)
    if name != "bad_truncated":
        text += "\n"
    with open(f"tests/histories/{name}.jsonl", "w") as f:
        f.write(text)
