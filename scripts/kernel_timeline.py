#!/usr/bin/env python3
"""Reads the kernel timelines of scripts/kernel-timeline (CSV.gz: start ns, end ns, stream, blocks, threads,
shared memory, registers, name) of a training benchmark, whose steps each end with one `adamw_f32`.

    scripts/kernel_timeline.py A.csv.gz            the last steps: wall, busy (kernels' union) and idle time; the
                                                   largest gaps between kernels of one step
    scripts/kernel_timeline.py A.csv.gz B.csv.gz   also each kernel's share of the step in A and in B: the time from
                                                   the end of the kernel before it to its own end (what it adds to
                                                   the step), summed by name, in step order, so the two runs' products
                                                   (other names, e.g. another matrix product) line up by the kernels
                                                   between them
"""
import collections
import gzip
import statistics
import sys

STEP_END = "adamw_f32"


def load(path):
    rows = []
    for line in gzip.open(path, "rt"):
        start, end, _stream, _blocks, _threads, _shared, _registers, name = line.rstrip("\n").split(",", 7)
        rows.append((int(start), int(end), name))
    rows.sort()
    return rows


def steps(rows, count=6):
    """The last `count` whole steps: (end of the step before, the step's kernels)."""
    ends = [i for i, row in enumerate(rows) if row[2] == STEP_END]
    return [(rows[a][1], rows[a + 1:b + 1]) for a, b in zip(ends[-count - 1:-1], ends[-count:])]


def short(name):
    return "cuBLASLt " + name[:40] if name.startswith(("nvjet", "sm90_xmma", "cutlass")) else name[:60]


def is_product(name):
    return name.startswith(("nvjet", "sm90_xmma", "cutlass", "hopper_matmul", "column_sums")) or "splitK" in name


def summary(path):
    rows = load(path)
    walls, busies = [], []
    for before, kernels in steps(rows):
        busy, start, end = 0, None, None
        for s, e, _ in kernels:
            if end is None or s > end:
                busy += (end - start) if end is not None else 0
                start, end = s, e
            else:
                end = max(end, e)
        busy += end - start
        walls.append((kernels[-1][1] - before) / 1e6)
        busies.append(busy / 1e6)
    print(f"{path}: {len(walls)} steps, wall {statistics.median(walls):.2f} ms, busy {statistics.median(busies):.2f}, "
          f"idle {statistics.median(w - b for w, b in zip(walls, busies)):.2f} (medians)")
    before, kernels = steps(rows)[-2]
    previous = [(before, "(the step before)")] + [(e, n) for _, e, n in kernels]
    gaps = sorted(((kernels[i][0] - previous[i][0]) / 1e3, previous[i][1], kernels[i][2]) for i in range(len(kernels)))
    for gap, a, b in reversed(gaps[-8:]):
        print(f"  gap {gap:8.1f} µs: {short(a)} → {short(b)}")


def shares(path):
    """Per step, in order: (name, µs it adds) for each kernel that is not a product, and the products before it."""
    result = []
    for before, kernels in steps(load(path)):
        last, items, products = before, [], 0.0
        for _, end, name in kernels:
            added = max(0, end - last) / 1e3
            last = max(last, end)
            if is_product(name):
                products += added
            else:
                items.append((name, added, products))
                products = 0.0
        result.append(items)
    return result


def compare(a_path, b_path):
    a, b = shares(a_path), shares(b_path)
    if [n for n, _, _ in a[0]] != [n for n, _, _ in b[0]]:
        sys.exit("the two runs do not run the same kernels between their products")
    totals = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
    for i, (name, _, _) in enumerate(a[0]):
        t = totals[name]
        t[0] += 1
        t[1] += statistics.median(s[i][1] for s in a)
        t[2] += statistics.median(s[i][1] for s in b)
        t[3] += statistics.median(s[i][2] for s in a)
        t[4] += statistics.median(s[i][2] for s in b)
    print(f"µs a step (medians), A = {a_path}, B = {b_path}; 'products' = the products before the kernel")
    for name, t in sorted(totals.items(), key=lambda x: -abs(x[1][1] - x[1][2]) - abs(x[1][3] - x[1][4]))[:16]:
        print(f"  {t[0]:3d}× {name[:34]:34s} A {t[1]:8.1f} B {t[2]:8.1f} ({t[1] - t[2]:+7.1f})   "
              f"products A {t[3]:8.1f} B {t[4]:8.1f} ({t[3] - t[4]:+7.1f})")
    sums = [sum(t[j] for t in totals.values()) / 1e3 for j in range(1, 5)]
    print("  all: kernels A %.2f B %.2f ms, products A %.2f B %.2f ms" % tuple(sums))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        summary(path)
    if len(sys.argv) == 3:
        compare(sys.argv[1], sys.argv[2])
