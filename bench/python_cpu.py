#!/usr/bin/env python3
"""Runs the Python anchor (python_anchor.py) unchanged, and records the CPU
time of each of its measured phases, for the "cpu us/task" column of
`bench/compare`.

Usage: python python_cpu.py ANCHOR [the anchor's arguments...]

The anchor is loaded as a module and run with its own `main()`; its
helpers that time tasks (`seq_latency`, `burst_throughput`, `payload_run`)
are wrapped, so each call's CPU time is known: user + system time of this
process (every thread) and of its descendants (the pool's worker
processes, a Dask cluster's), from /proc/<pid>/task/<tid>/schedstat, plus
the rusage of children reaped meanwhile. Each call is matched to the
result row the anchor writes next, and the JSON it writes gets a "cpu"
entry: {row key: [{"phase", "size_bytes", "tasks", "cpu_us_per_task"}]}
(phase "lat" for sequential latency, "thr" for bursts, "payload" for a
payload row, whose tasks include its warm-up task, as on the Rust side).
"""

import importlib.util
import json
import os
import resource
import sys


def threads_cpu(pid):
    total = 0
    try:
        tids = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f'/proc/{pid}/task/{tid}/schedstat') as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def children_of(pid):
    out = []
    try:
        tids = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f'/proc/{pid}/task/{tid}/children') as f:
                out.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            pass
    return out


def tree_cpu():
    """CPU seconds so far of this process, its live descendants and its
    reaped children."""
    me = os.getpid()
    total = threads_cpu(me)
    todo = children_of(me)
    seen = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += threads_cpu(pid)
        todo.extend(children_of(pid))
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + ru.ru_utime + ru.ru_stime


def main():
    anchor = sys.argv[1]
    sys.path.insert(0, os.path.dirname(os.path.abspath(anchor)))
    spec = importlib.util.spec_from_file_location('python_anchor', anchor)
    A = importlib.util.module_from_spec(spec)
    sys.modules['python_anchor'] = A
    spec.loader.exec_module(A)

    cpu = {}          # row key -> [entries]
    pending = []      # measured calls not yet matched to a row
    state = {'R': None, 'seen': {}}

    def snapshot(R):
        return {k: (len(v) if isinstance(v, list) else 1) for k, v in R.items()}

    def settle():
        """Gives the pending calls to the row(s) written since."""
        R = state['R']
        if R is None or not pending:
            return
        now = snapshot(R)
        def is_row(v):
            if isinstance(v, list):
                return bool(v) and isinstance(v[-1], dict) and 'size_bytes' in v[-1]
            return isinstance(v, dict) and ('lat_us' in v or 'thr_tasks_s' in v)
        grown = [k for k, n in now.items()
                 if n != state['seen'].get(k) and is_row(R[k])]
        state['seen'] = now
        if not grown:
            return
        key = grown[-1]
        row = R[key]
        size = row[-1].get('size_bytes') if isinstance(row, list) else None
        for phase, tasks, seconds in pending:
            cpu.setdefault(key, []).append({
                'phase': phase,
                'size_bytes': size,
                'tasks': tasks,
                'cpu_us_per_task': seconds * 1e6 / max(tasks, 1),
            })
        pending.clear()

    def measured(phase, tasks_of, fn):
        def wrapper(*args, **kwargs):
            settle()
            before = tree_cpu()
            out = fn(*args, **kwargs)
            pending.append((phase, tasks_of(args, kwargs), tree_cpu() - before))
            return out
        return wrapper

    A.seq_latency = measured('lat', lambda a, k: a[2], A.seq_latency)
    A.burst_throughput = measured(
        'thr', lambda a, k: a[2] * k.get('rounds', a[4] if len(a) > 4 else 3),
        A.burst_throughput)
    # payload_run(ex, fn, make_arg, check, reps, ...): reps + its warm-up.
    A.payload_run = measured('payload', lambda a, k: a[4] + 1, A.payload_run)

    def capturing(part):
        def wrapper(c, R, *rest):
            if state['R'] is not R:
                state['R'] = R
                state['seen'] = snapshot(R)
            return part(c, R, *rest)
        return wrapper

    A.part_ab = capturing(A.part_ab)
    A.part_cd = capturing(A.part_cd)

    dump = json.dump

    def dump_with_cpu(obj, f, **kwargs):
        if isinstance(obj, dict) and obj is state['R']:
            settle()
            obj['cpu'] = cpu
        return dump(obj, f, **kwargs)

    A.json.dump = dump_with_cpu
    sys.argv = [anchor] + sys.argv[2:]
    A.main()


if __name__ == '__main__':
    main()
