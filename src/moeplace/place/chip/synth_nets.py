"""The nets and pins of a synthetic design (see generate.py): Circuit Training-style clustered netlists.

Every hard-macro input pin gets one driver (a bank's shared bus from its driving cluster, or a nearby
soft macro), every hard-macro output pin and every input port drives nearby soft macros, every output
port is driven by one, and each soft macro drives 1 + Poisson(c x (area / mean area)^0.6) nets
(Rent's rule: pins grow sub-linearly with a cluster's size) whose fan-out k has P(k) ∝ k^-gamma
(gamma 1.4-2.0 per design; Ariane133's nets fit gamma ≈ 1.5 up to 6 sinks). Sinks are drawn
with probability ∝ (distance + d0)^-alpha in the latent layout, so most nets stay local.
"""

from __future__ import annotations

import numpy as np

from moeplace.place.chip.netlist import Netlist, NodeKind

Ref = tuple  # ("port", p) | ("hin", j, k) | ("hout", j, k) | ("sin", i) | ("sout", i, k)


class _Sampler:
    """Distance-decaying choice of sinks: p ∝ (d + d0)^-alpha."""

    def __init__(self, rng: np.random.Generator, alpha: float, d0: float) -> None:
        self.rng, self.alpha, self.d0 = rng, alpha, d0

    def pick(self, src: np.ndarray, cand: np.ndarray, k: int, exclude: int = -1) -> np.ndarray:
        """Up to k distinct candidate indices near `src`."""
        p = (np.hypot(cand[:, 0] - src[0], cand[:, 1] - src[1]) + self.d0) ** -self.alpha
        if exclude >= 0:
            p[exclude] = 0.0
        k = min(k, int(np.count_nonzero(p)))
        return self.rng.choice(len(cand), size=k, replace=False, p=p / p.sum())


def _weight(rng: np.random.Generator, bus: bool = False) -> float:
    """A net weight: 1 for most nets, a bus width of 2-32 for some (all of a bank's shared buses)."""
    if bus or rng.random() < 0.25:
        return float(round(np.exp(rng.uniform(np.log(2), np.log(32)))))
    return 1.0


def _pin_offsets(rng: np.random.Generator, w: float, h: float, n_in: int,
                 n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of a macro's n_in input then n_out output pins, evenly spaced along its edges: inputs on
    the left and outputs on the right, or all on the bottom edge, or inputs bottom and outputs top."""
    layout = int(rng.integers(3))
    inset_x, inset_y = 0.02 * w, 0.02 * h

    def along(m: int, length: float) -> np.ndarray:
        return ((np.arange(m) + 0.5) / m - 0.5) * 0.9 * length

    if layout == 0:
        dx = np.r_[np.full(n_in, -w / 2 + inset_x), np.full(n_out, w / 2 - inset_x)]
        dy = np.r_[along(n_in, h), along(n_out, h)]
    elif layout == 1:
        dx, dy = along(n_in + n_out, w), np.full(n_in + n_out, -h / 2 + inset_y)
    else:
        dx = np.r_[along(n_in, w), along(n_out, w)]
        dy = np.r_[np.full(n_in, -h / 2 + inset_y), np.full(n_out, h / 2 - inset_y)]
    return np.round(dx, 3), np.round(dy, 3)


def build_netlist(rng: np.random.Generator, hard, soft, ports, canvas: tuple[float, float]) -> Netlist:
    """The netlist of a design: `hard = (w, h, bank, xy, bank_module)`, `soft = (w, h, xy, module)`,
    `ports = (x, y)` (on the boundary), positions being the initial placement."""
    hw, hh, bank, hxy, bank_module = hard
    sw, sh, sxy, module = soft
    px, py = ports
    width, height = canvas
    n_hard, n_soft, n_ports = len(hw), len(sw), len(px)
    pxy = np.stack([px, py], 1)
    sampler = _Sampler(rng, alpha=float(rng.uniform(2.3, 3.8)), d0=float(np.sqrt(width * height / n_soft)))
    pick = sampler.pick
    pitch = rng.uniform(8.0, 25.0)
    n_pins = np.clip(np.round(2 * (hw + hh) / pitch), 4, 40).astype(int)
    n_out = np.maximum(1, np.round(n_pins * rng.uniform(0.2, 0.4, n_hard))).astype(int)
    n_in = n_pins - n_out
    is_input_port = rng.random(n_ports) < rng.uniform(0.4, 0.7)
    gamma = rng.uniform(1.4, 2.0)
    fan_p = {cap: np.arange(1, cap + 1) ** -gamma for cap in (6, 8, 24)}
    fan_p = {cap: p / p.sum() for cap, p in fan_p.items()}
    soft_outs: list[list[str]] = [[] for _ in range(n_soft)]  # pin name suffixes, in creation order
    nets: list[tuple[Ref, list[Ref], float]] = []

    def soft_driver(i: int, sinks: list[Ref], weight: float) -> None:
        """A new output pin of soft macro i driving `sinks`."""
        kind = "single" if len(sinks) == 1 else "multi"
        k = sum(s.startswith(f"Poutput_{kind}") for s in soft_outs[i])
        soft_outs[i].append(f"Poutput_{kind}_{k}")
        nets.append((("sout", i, len(soft_outs[i]) - 1), sinks, weight))

    def fanout(cap: int) -> int:
        """Sinks of a net: P(k) ∝ k^-gamma for k = 1..cap (real netlists: mostly 2-pin nets, a long tail)."""
        return int(rng.choice(cap, p=fan_p[cap]) + 1)

    # banks: shared buses from the cluster nearest the bank, to the same input pins of every member
    driven = [np.zeros(n, bool) for n in n_in]
    for b in range(int(bank.max()) + 1):
        members = np.flatnonzero(bank == b)
        if len(members) < 2:
            continue
        centre = hxy[members].mean(0)
        local = np.flatnonzero(module == bank_module[b])
        local = local if len(local) else np.arange(n_soft)
        n_bus = int(min(n_in[members].min(), rng.integers(1, 5)))
        for k in range(n_bus):
            i = int(local[pick(centre, sxy[local], 1)[0]])
            soft_driver(i, [("hin", int(j), k) for j in members], _weight(rng, bus=True))
            for j in members:
                driven[j][k] = True
    for j in range(n_hard):
        for k in np.flatnonzero(~driven[j]):  # every other input pin: one nearby driver
            i = int(pick(hxy[j], sxy, 1)[0])
            sinks: list[Ref] = [("hin", j, int(k))]
            if rng.random() < 0.5:
                sinks += [("sin", int(s)) for s in pick(sxy[i], sxy, int(rng.integers(1, 3)), exclude=i)]
            soft_driver(i, sinks, _weight(rng))
        for k in range(n_out[j]):  # output pins drive nearby clusters (now and then a port)
            sinks = [("sin", int(s)) for s in pick(hxy[j], sxy, fanout(8))]
            outs = np.flatnonzero(~is_input_port)
            if len(outs) and rng.random() < 0.05:
                sinks.append(("port", int(outs[pick(hxy[j], pxy[outs], 1)[0]])))
            nets.append((("hout", j, k), sinks, _weight(rng)))
    for p in range(n_ports):
        if is_input_port[p]:
            nets.append((("port", p), [("sin", int(s)) for s in pick(pxy[p], sxy, fanout(6))],
                         _weight(rng)))
        else:
            soft_driver(int(pick(pxy[p], sxy, 1)[0]), [("port", p)], _weight(rng))
    c = rng.uniform(1.5, 5.0)
    area = sw * sh
    n_soft_nets = 1 + rng.poisson(c * (area / area.mean()) ** 0.6)
    for i in range(n_soft):
        for _ in range(int(n_soft_nets[i])):
            sinks = [("sin", int(s)) for s in pick(sxy[i], sxy, fanout(24), exclude=i)]
            soft_driver(i, sinks, _weight(rng))
    return _assemble(hard, soft, ports, canvas, is_input_port, n_in, n_out, soft_outs, nets, rng)


def _assemble(hard, soft, ports, canvas, is_input_port, n_in, n_out, soft_outs, nets, rng) -> Netlist:
    """Node arrays in Circuit Training's order (ports, hard macros, their pins, soft macros, their pins)."""
    hw, hh, bank, hxy, _ = hard
    sw, sh, sxy, _ = soft
    px, py = ports
    names: list[str] = []
    rows: list[tuple] = []  # kind, width, height, x, y, parent, dx, dy
    ids: dict[Ref, int] = {}

    def add(ref: Ref, name: str, kind: NodeKind, w=0.0, h=0.0, x=0.0, y=0.0, parent=-1, dx=0.0, dy=0.0):
        ids[ref] = len(names)
        names.append(name)
        rows.append((int(kind), w, h, x, y, parent, dx, dy))

    counters = {"in": 0, "out": 0}
    for p in range(len(px)):
        side = "in" if is_input_port[p] else "out"
        add(("port", p), f"{side}_port[{counters[side]}]", NodeKind.PORT, x=float(px[p]), y=float(py[p]))
        counters[side] += 1
    bank_count: dict[int, int] = {}
    macro_name = []
    for j in range(len(hw)):
        b = int(bank[j])
        k = bank_count.get(b, 0)
        bank_count[b] = k + 1
        macro_name.append(f"mem{b}/bank[{k}]")
        add(("hard", j), macro_name[j], NodeKind.HARD_MACRO, float(hw[j]), float(hh[j]), float(hxy[j, 0]),
            float(hxy[j, 1]))
    for j in range(len(hw)):
        dx, dy = _pin_offsets(rng, float(hw[j]), float(hh[j]), int(n_in[j]), int(n_out[j]))
        for k in range(n_in[j] + n_out[j]):
            ref = ("hin", j, k) if k < n_in[j] else ("hout", j, k - n_in[j])
            pin = f"D[{k}]" if k < n_in[j] else f"Q[{k - n_in[j]}]"
            add(ref, f"{macro_name[j]}/{pin}", NodeKind.HARD_MACRO_PIN, parent=ids[("hard", j)],
                dx=float(dx[k]), dy=float(dy[k]))
    for i in range(len(sw)):
        add(("soft", i), f"Grp_{i}", NodeKind.SOFT_MACRO, float(sw[i]), float(sh[i]), float(sxy[i, 0]),
            float(sxy[i, 1]))
    for i in range(len(sw)):
        parent = ids[("soft", i)]
        add(("sin", i), f"Grp_{i}/Pinput", NodeKind.SOFT_MACRO_PIN, parent=parent)
        for k, suffix in enumerate(soft_outs[i]):
            add(("sout", i, k), f"Grp_{i}/{suffix}", NodeKind.SOFT_MACRO_PIN, parent=parent)
    kind, width, height, x, y, parent, dx, dy = (np.array(c) for c in zip(*rows))
    kind, parent = kind.astype(np.int8), parent.astype(np.int64)
    pins = parent >= 0
    x[pins] = x[parent[pins]]  # pins sit on their macro (hard-macro pins: plus offset, see pin_positions)
    y[pins] = y[parent[pins]]
    weight = np.ones(len(names))
    order = sorted(range(len(nets)), key=lambda m: ids[nets[m][0]])  # nets in driver node order
    drivers, ptr, flat = [], [0], []
    for m in order:
        d, sinks, wgt = nets[m]
        drivers.append(ids[d])
        weight[ids[d]] = wgt
        flat += [ids[d]] + [ids[s] for s in sinks]
        ptr.append(len(flat))
    net_driver = np.array(drivers, np.int64)
    return Netlist(names=names, kind=kind, width=width.astype(float), height=height.astype(float),
                   x=x.astype(float), y=y.astype(float), orient=np.zeros(len(names), np.int8),
                   fixed=kind == NodeKind.PORT, parent=parent, x_offset=dx.astype(float),
                   y_offset=dy.astype(float), weight=weight, net_driver=net_driver,
                   net_ptr=np.array(ptr, np.int64), net_pins=np.array(flat, np.int64),
                   net_weight=weight[net_driver].copy(), canvas=(float(canvas[0]), float(canvas[1])))
