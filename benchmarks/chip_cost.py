"""Proxy-cost speed on Ariane133: a naive per-net Python loop vs our vectorised and incremental paths.

    python benchmarks/chip_cost.py [--repeats 20] [--moves 200]

Times are medians of CPU (process) time, steadier than wall time on a shared machine; wall times
are printed too. The naive evaluator below is a plain transcription of Circuit Training's
definitions (one Python loop per net, per macro, per cell). It also serves as an independent
cross-check: the script asserts that both evaluators agree. The last line is a JSON object with
the figures.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from moeplace.data import CHIP_DIR
from moeplace.place.chip.cost import ProxyCost
from moeplace.place.chip.netlist import Netlist, NodeKind, load_netlist
from moeplace.place.chip.plc import PlcHeader, load_placement
from moeplace.place.chip.settings import preset
from moeplace.utils import markdown_table, print_json_line

# orientation -> how a pin offset (dx, dy) turns: (a, b, c, d) gives (a*dx + b*dy, c*dx + d*dy)
TURN = {0: (1, 0, 0, 1), 1: (-1, 0, 0, -1), 2: (0, 1, -1, 0), 3: (0, -1, 1, 0),  # N S E W
        4: (-1, 0, 0, 1), 5: (1, 0, 0, -1), 6: (0, -1, -1, 0), 7: (0, 1, 1, 0)}  # FN FS FE FW


def naive_proxy_cost(nl: Netlist, hd: PlcHeader, x: list[float], y: list[float],
                     orient: list[int]) -> tuple[float, float, float, float]:
    """(wirelength, density, congestion, proxy) with plain Python loops; x, y, orient are lists."""
    kind, parent = nl.kind.tolist(), nl.parent.tolist()
    xo, yo = nl.x_offset.tolist(), nl.y_offset.tolist()
    width, height = nl.width.tolist(), nl.height.tolist()
    n = len(kind)
    px, py = list(x), list(y)
    for i in range(n):
        p = parent[i]
        if p >= 0:
            if kind[i] == NodeKind.HARD_MACRO_PIN:
                a, b, c, d = TURN[orient[p]]
                px[i] = x[p] + a * xo[i] + b * yo[i]
                py[i] = y[p] + c * xo[i] + d * yo[i]
            else:
                px[i], py[i] = x[p], y[p]
    ptr, pins, weights = nl.net_ptr.tolist(), nl.net_pins.tolist(), nl.net_weight.tolist()
    W, H, cols, rows = hd.width, hd.height, hd.columns, hd.rows
    cw, ch = W / cols, H / rows
    # wirelength
    total = 0.0
    for m in range(len(weights)):
        xs = [px[p] for p in pins[ptr[m]:ptr[m + 1]]]
        ys = [py[p] for p in pins[ptr[m]:ptr[m + 1]]]
        total += weights[m] * (max(xs) - min(xs) + max(ys) - min(ys))
    wirelength = total / ((W + H) * sum(weights))

    def footprint(i):
        w, h = width[i], height[i]
        if kind[i] == NodeKind.HARD_MACRO and orient[i] in (2, 3, 6, 7):
            w, h = h, w
        return x[i] - w / 2, y[i] - h / 2, x[i] + w / 2, y[i] + h / 2

    def spans(lo, hi, step, count):
        """(cell, overlap) of an interval with the cells of one axis."""
        out = []
        for k in range(max(0, math.floor(lo / step)), min(count - 1, math.floor(hi / step)) + 1):
            ov = min(hi, (k + 1) * step) - max(lo, k * step)
            if ov > 0:
                out.append((k, ov))
        return out

    # density
    area = [[0.0] * cols for _ in range(rows)]
    for i in range(n):
        if kind[i] in (NodeKind.HARD_MACRO, NodeKind.SOFT_MACRO):
            x0, y0, x1, y1 = footprint(i)
            for r, oy in spans(y0, y1, ch, rows):
                for c, ox in spans(x0, x1, cw, cols):
                    area[r][c] += ox * oy
    dens = sorted((a / (cw * ch) for row in area for a in row), reverse=True)
    k = max(1, math.floor(0.1 * len(dens)))
    density = 0.5 * sum(dens[:k]) / k
    # congestion, on its own grid where the header names one
    if hd.congestion_columns is not None:
        cols, rows = hd.congestion_columns, hd.congestion_rows
        cw, ch = W / cols, H / rows
    # congestion: net routing
    hdem = [[0.0] * cols for _ in range(rows)]
    vdem = [[0.0] * cols for _ in range(rows)]

    def hrun(row, c0, c1, w):
        for c in range(min(c0, c1), max(c0, c1)):
            hdem[row][c] += w

    def vrun(col, r0, r1, w):
        for r in range(min(r0, r1), max(r0, r1)):
            vdem[r][col] += w

    def cell(p):
        return (min(cols - 1, max(0, math.floor(px[p] / cw))), min(rows - 1, max(0, math.floor(py[p] / ch))))

    for m in range(len(weights)):
        w = weights[m]
        net = pins[ptr[m]:ptr[m + 1]]
        if any(not (0 <= px[p] <= W and 0 <= py[p] <= H) for p in net):
            continue  # a net with a pin off the canvas is not routed
        src = cell(net[0])
        cells = [src]
        for p in net[1:]:
            cp = cell(p)
            if cp not in cells:
                cells.append(cp)
        if len(cells) == 3:
            (i1, j1), (i2, j2), (i3, j3) = sorted(cells)
            if i1 < i2 < i3 and min(j1, j3) < j2 < max(j1, j3):
                hrun(j1, i1, i2, w), hrun(j2, i2, i3, w), vrun(i2, j1, j2, w), vrun(i3, j2, j3, w)
            elif i2 == i3 and i1 < i2 and j1 < min(j2, j3):
                hrun(j1, i1, i2, w), vrun(i2, j1, max(j2, j3), w)
            elif j2 == j3:
                hrun(j1, i1, i2, w), hrun(j2, i2, i3, w), vrun(i2, j1, j2, w)
            else:
                (a, ja), (b, jb), (c, jc) = sorted(cells, key=lambda t: t[1])
                hrun(jb, min(a, b, c), max(a, b, c), w), vrun(a, ja, jb, w), vrun(c, jb, jc, w)
        else:
            for t in cells[1:]:
                hrun(src[1], src[0], t[0], w)
                vrun(t[0], src[1], t[1], w)
    ks = int(hd.smoothing)
    hs = [[0.0] * cols for _ in range(rows)]
    vs = [[0.0] * cols for _ in range(rows)]
    for r in range(rows):  # V demand spreads over neighbouring columns, H demand over rows
        for c in range(cols):
            lo, hi = max(0, c - ks), min(cols - 1, c + ks)
            for cc in range(lo, hi + 1):
                vs[r][cc] += vdem[r][c] / (hi - lo + 1)
            lo, hi = max(0, r - ks), min(rows - 1, r + ks)
            for rr in range(lo, hi + 1):
                hs[rr][c] += hdem[r][c] / (hi - lo + 1)
    hcong = [[hs[r][c] / (ch * hd.hroutes_per_micron) for c in range(cols)] for r in range(rows)]
    vcong = [[vs[r][c] / (cw * hd.vroutes_per_micron) for c in range(cols)] for r in range(rows)]
    # congestion: hard macros' routing allocation
    for i in range(n):
        if kind[i] != NodeKind.HARD_MACRO:
            continue
        x0, y0, x1, y1 = footprint(i)
        # the cells of the corners, floor(edge / cell) clamped to the grid; the last one may be empty
        r0, r1 = (min(max(math.floor(v / ch), 0), rows - 1) for v in (y0, y1))
        c0, c1 = (min(max(math.floor(v / cw), 0), cols - 1) for v in (x0, x1))
        oy = {r: max(0.0, min(y1, (r + 1) * ch) - max(y0, r * ch)) for r in range(r0, r1 + 1)}
        ox = {c: max(0.0, min(x1, (c + 1) * cw) - max(x0, c * cw)) for c in range(c0, c1 + 1)}
        drop_v = drop_h = False
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                dx, dy = (ox[c], oy[r]) if ox[c] > 0 and oy[r] > 0 else (0.0, 0.0)
                drop_v |= r1 != r0 and r in (r0, r1) and abs(dy - ch) > 1e-5
                drop_h |= c1 != c0 and c in (c0, c1) and abs(dx - cw) > 1e-5
                vcong[r][c] += dx * hd.vrouting_alloc / (cw * hd.vroutes_per_micron)
                hcong[r][c] += dy * hd.hrouting_alloc / (ch * hd.hroutes_per_micron)
        for c in range(c0, c1 + 1):
            if drop_v and ox[c] > 0 and oy[r1] > 0:
                vcong[r1][c] -= ox[c] * hd.vrouting_alloc / (cw * hd.vroutes_per_micron)
        for r in range(r0, r1 + 1):
            if drop_h and oy[r] > 0 and ox[c1] > 0:
                hcong[r][c1] -= oy[r] * hd.hrouting_alloc / (ch * hd.hroutes_per_micron)
    flat = sorted([v for row in vcong for v in row] + [h for row in hcong for h in row], reverse=True)
    k = max(1, math.floor(0.05 * len(flat)))
    congestion = sum(flat[:k]) / k
    a, b, c = hd.weights
    return wirelength, density, congestion, a * wirelength + b * density + c * congestion


def _median_ms(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU (process) time of fn() in ms; CPU time is steadier on a shared box."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def main() -> None:
    """Run the comparison and print the table and JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20, help="timed repeats of each full evaluation")
    ap.add_argument("--moves", type=int, default=200, help="timed incremental moves of each kind")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t = time.perf_counter()
    nl = load_netlist(CHIP_DIR / "ariane133" / "netlist.pb.txt.gz")
    parse_s = time.perf_counter() - t
    hd = load_placement(nl, CHIP_DIR / "ariane133" / "legalized.plc")
    pc = ProxyCost(nl, hd)
    x, y, o = nl.x.tolist(), nl.y.tolist(), nl.orient.tolist()
    naive_terms = naive_proxy_cost(nl, hd, x, y, o)
    naive_ms = _median_ms(lambda: naive_proxy_cost(nl, hd, x, y, o), max(1, args.repeats // 10))
    terms = pc.evaluate()
    ours = (terms.wirelength, terms.density, terms.congestion, terms.proxy)
    assert np.allclose(naive_terms, ours, rtol=1e-9, atol=1e-12), (naive_terms, ours)
    full_ms = _median_ms(pc.evaluate, args.repeats)
    rng = np.random.default_rng(args.seed)
    state = pc.state()
    per_kind = {}
    for label, pool in (("hard", nl.hard_macros), ("soft", nl.soft_macros)):
        targets = [(int(rng.choice(pool)), rng.uniform(0, hd.width), rng.uniform(0, hd.height))
                   for _ in range(args.moves)]
        it = iter(targets)

        def one_move(it=it):
            i, nx, ny = next(it)
            state.move([i], [nx], [ny])
            state.reject()

        per_kind[label] = _median_ms(one_move, args.moves)
    # check: one accepted move of each kind agrees with a full evaluation
    for pool in (nl.hard_macros, nl.soft_macros):
        state.move([int(pool[0])], [700.0], [700.0])
        state.accept()
    full = pc.evaluate(state.x, state.y, state.orient)
    assert abs(full.proxy - state.terms().proxy) < 1e-9
    # Circuit Training's current settings: its own 81 x 81 congestion grid, smoothing 5, weights 1/1/0.5
    ct_hd = preset(hd, "ct")
    ct_pc = ProxyCost(nl, ct_hd)
    ct_terms = ct_pc.evaluate()
    assert np.allclose(naive_proxy_cost(nl, ct_hd, x, y, o), (ct_terms.wirelength, ct_terms.density,
                                                               ct_terms.congestion, ct_terms.proxy),
                       rtol=1e-9, atol=1e-12)
    ct_full_ms = _median_ms(ct_pc.evaluate, args.repeats)
    ct_state = ct_pc.state()
    it = iter([(int(rng.choice(nl.hard_macros)), rng.uniform(0, hd.width), rng.uniform(0, hd.height))
               for _ in range(args.moves)])

    def ct_move(it=it):
        i, nx, ny = next(it)
        ct_state.move([i], [nx], [ny])
        ct_state.reject()

    ct_hard_ms = _median_ms(ct_move, args.moves)
    timings = [("naive per-net Python loop (full)", naive_ms), ("vectorised numpy (full)", full_ms),
               ("incremental, 1 hard macro moves", per_kind["hard"]),
               ("incremental, 1 soft macro moves", per_kind["soft"]),
               ("vectorised (full), CT settings", ct_full_ms),
               ("incremental, 1 hard macro, CT settings", ct_hard_ms)]
    rows = [{"evaluation": name, "wall ms": wall, "cpu ms": cpu, "speed-up (cpu)": naive_ms[1] / cpu}
            for name, (wall, cpu) in timings]
    print(f"Ariane133 legalized.plc: {nl.num_nets} nets, {len(nl.net_pins)} net pins, grid "
          f"{hd.columns}x{hd.rows}; netlist parse {parse_s:.2f} s")
    print(f"costs: wirelength {terms.wirelength:.5f}  density {terms.density:.5f}  "
          f"congestion {terms.congestion:.5f}  proxy {terms.proxy:.5f} (both evaluators agree)")
    print(f"CT settings ({ct_pc.cgrid.columns}x{ct_pc.cgrid.rows} congestion grid, smoothing 5, weights "
          f"1/1/0.5): congestion {ct_terms.congestion:.5f}  proxy {ct_terms.proxy:.5f} (both agree)")
    print(markdown_table(rows, floatfmt=".4g"))
    print_json_line({
        "netlist": "ariane133", "parse_s": round(parse_s, 3),
        "naive_full_ms": round(naive_ms[1], 2), "full_ms": round(full_ms[1], 3),
        "incremental_hard_move_ms": round(per_kind["hard"][1], 3),
        "incremental_soft_move_ms": round(per_kind["soft"][1], 3),
        "full_wall_ms": round(full_ms[0], 3), "naive_full_wall_ms": round(naive_ms[0], 2),
        "speedup_full": round(naive_ms[1] / full_ms[1], 1),
        "speedup_incremental_hard": round(naive_ms[1] / per_kind["hard"][1], 1),
        "wirelength": round(terms.wirelength, 6), "density": round(terms.density, 6),
        "congestion": round(terms.congestion, 6), "proxy": round(terms.proxy, 6),
        "ct_full_ms": round(ct_full_ms[1], 3), "ct_incremental_hard_move_ms": round(ct_hard_ms[1], 3),
        "ct_congestion": round(ct_terms.congestion, 6), "ct_proxy": round(ct_terms.proxy, 6),
    })

if __name__ == "__main__":
    main()
