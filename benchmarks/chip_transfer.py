"""Chip policy transfer: SA and PPO from scratch, the untrained prior, pre-trained zero-shot and fine-tuned.

On Ariane133 (held out from every corpus), ibm01 (part of every pre-training corpus) and generated
designs of another seed than the pre-training corpus (never seen), each method gets the same wall
time in this process, one after the other, and the same information: every method starts from
nothing (no input placement; soft macros start at the canvas centre):

- sa: `anneal_chip` (what `place chip --method sa` runs) from a random legal placement;
- ppo: `train_chip_rl` from a fresh ChipPolicy (`--method rl --policy none`);
- prior: the untrained policy (the wire-mask greedy with the pre-training's edge prior), zero-shot
  like the next row at its own best temperature, 1: what pre-training has to beat;
- zero-shot: the pre-trained policy's greedy episode and the best of its sampled ones, 16 at a time
  for `--zero-shot` seconds (default 60, the issue's limit), at `--temperature` (default 1);
- fine-tuned: zero-shot, then PPO from the pre-trained weights for the rest of the budget
  (`--method rl`, the default), with the zero-shot best as incumbent. RL alone: no annealing or
  local search after it.

Every RL row runs in improvement mode (`--incumbent-logit`, default 5 as in `place chip`; 0 = off):
sampled episodes see the best placement so far and add that many logits to each macro's cell in it.
The input placement's cost (Ariane133: the reference placement) is printed beside them.

    OPENBLAS_NUM_THREADS=1 python benchmarks/chip_transfer.py --budget 600 --other-budget 120 [--policy DIR]
        [--generated 3] [--only ariane|others] [--zero-shot 60] [--incumbent-logit 5]

Prints one row per design and method (proxy cost, ratio to SA's, episodes/evaluations, wall time),
the pre-training budget of the policy and where its time went, and ends with one JSON line.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: tiny matrices, BLAS threads only spin

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from moeplace.cli.place_chip import INCUMBENT_LOGIT  # noqa: E402
from moeplace.data import CHIP_DIR  # noqa: E402
from moeplace.place.chip.agent import train_chip_rl  # noqa: E402
from moeplace.place.chip.anneal import anneal_chip  # noqa: E402
from moeplace.place.chip.corpus import builtin_entries, generate_corpus, load_corpus  # noqa: E402
from moeplace.place.chip.cost import ProxyCost  # noqa: E402
from moeplace.place.chip.netlist import load_netlist  # noqa: E402
from moeplace.place.chip.plc import load_placement  # noqa: E402
from moeplace.place.chip.policy import ChipPolicy, set_priors  # noqa: E402
from moeplace.place.chip.policy_io import DEFAULT_POLICY, load_policy  # noqa: E402
from moeplace.place.chip.problem import ChipProblem  # noqa: E402
from moeplace.place.chip.transfer import run_pretrained  # noqa: E402
from moeplace.place.search import random_rollout  # noqa: E402
from moeplace.utils import markdown_table, print_json_line, seed_everything  # noqa: E402


def designs(generated: int, seed: int, tmp: str) -> list[tuple[str, object, object]]:
    """(name, netlist, header) of Ariane133, ibm01 and `generated` designs of seed `seed`."""
    a = CHIP_DIR / "ariane133"
    netlist = load_netlist(a / "netlist.pb.txt.gz")
    out = [("ariane133 (held out)", netlist, load_placement(netlist, a / "legalized.plc"))]
    ibm = next(e for e in builtin_entries() if e.name == "ibm01").load()
    out.append(("ibm01", ibm.netlist, ibm.header))
    if generated:
        generate_corpus(tmp, generated, seed=seed, show_progress=False)
        for d in load_corpus([tmp], builtin=False):
            out.append((f"generated seed {seed}/{d.name.split('/')[-1]}", d.netlist, d.header))
    return out


def run_design(netlist, header, budget_s: float, args, policy_file: str) -> dict[str, tuple]:
    """The five methods on one design, each for `budget_s` seconds: {method: (cost, evaluations, wall_s)}."""
    results = {}
    sa_problem = ChipProblem(netlist, header, orientations=True, soft="fixed", soft_start="center")
    init = random_rollout(sa_problem, np.random.default_rng(args.seed))
    if (init < 0).any():  # a random draw met a dead end: start from the bottom-left packing instead
        init = sa_problem.pack()
    res = anneal_chip(sa_problem, budget_s=budget_s, seed=args.seed, init=init, progress=False)
    results["sa"] = (res.cost, res.evaluations, res.wall_s)
    rl_problem = ChipProblem(netlist, header, soft="fd", fd_iterations=args.fd_iterations,
                             soft_start="center")
    res = train_chip_rl(rl_problem, budget_s=budget_s, seed=args.seed, progress=False,
                        incumbent_logit=args.incumbent_logit)
    results["ppo"] = (res.cost, res.evaluations, res.wall_s)
    policy, trained = load_policy(policy_file)
    prior = ChipPolicy(policy.hidden, policy.rounds, policy.channels)
    set_priors(prior, edge=float(trained.get("edge_prior", 0.0)))
    zero = dict(finetune_s=0.0, samples=args.samples, zero_shot_s=args.zero_shot, seed=args.seed,
                incumbent_logit=args.incumbent_logit)
    for name, pol, warmth in (("prior", prior, 1.0), ("zero-shot", policy, args.temperature)):
        start = time.perf_counter()
        res, _ = run_pretrained(rl_problem, pol, temperature=warmth, **zero)
        results[name] = (res.cost, res.evaluations, time.perf_counter() - start)
    policy, _ = load_policy(policy_file)
    res, phases = run_pretrained(rl_problem, policy, budget_s=budget_s, samples=args.samples,
                                 temperature=args.temperature, incumbent_logit=args.incumbent_logit,
                                 zero_shot_s=args.zero_shot, seed=args.seed, progress=False)
    results["fine-tuned"] = (res.cost, res.evaluations, res.wall_s)
    results["phases"] = phases
    return results


def main() -> None:
    """Run the four methods on every design, print the table, end with the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=600.0, help="wall seconds per method on Ariane133")
    ap.add_argument("--other-budget", type=float, default=120.0,
                    help="wall seconds per method on ibm01 and the generated designs")
    ap.add_argument("--policy", default=str(DEFAULT_POLICY),
                    help="pre-trained policy (default: the shipped one)")
    ap.add_argument("--generated", type=int, default=3, help="generated held-out designs")
    ap.add_argument("--generated-seed", type=int, default=1000,
                    help="their corpus seed (pre-training used 0)")
    ap.add_argument("--only", choices=["ariane", "others"], default=None,
                    help="run Ariane133 alone, or everything but Ariane133 (default: all)")
    ap.add_argument("--fd-iterations", type=int, default=50,
                    help="force-directed iterations placing the soft macros after each RL episode")
    ap.add_argument("--samples", type=int, default=16, help="zero-shot sampled episodes per batch")
    ap.add_argument("--zero-shot", type=float, default=60.0, help="zero-shot sampling seconds")
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="sampling temperature of the pre-trained policy (zero-shot and fine-tuned rows)")
    ap.add_argument("--incumbent-logit", type=float, default=INCUMBENT_LOGIT,
                    help="improvement mode of every RL row (place chip's --rl-incumbent-logit; 0 = off)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("MOEPLACE_NO_PROGRESS", "1")
    seed_everything(args.seed)
    _, trained = load_policy(args.policy)
    split = ", ".join(f"{k} {trained[k]} s" for k in ("rollout_s", "update_s", "checkpoint_s", "validation_s")
                      if k in trained)
    print(f"policy: {args.policy}; pre-trained {trained.get('train_s', '?')} s, "
          f"{trained.get('updates', '?')} updates, {trained.get('episodes', '?')} episodes on "
          f"{trained.get('designs', '?')} designs"
          + (f" ({split})" if split else ""), flush=True)
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        todo = designs(args.generated if args.only != "ariane" else 0, args.generated_seed, tmp)
    if args.only == "ariane":
        todo = todo[:1]
    elif args.only == "others":
        todo = todo[1:]
    warm = ChipProblem(todo[-1][1], todo[-1][2], soft="fd", fd_iterations=10)
    train_chip_rl(warm, max_episodes=2, n_envs=2, progress=False)  # one-time costs (numba, lazy imports)
    for name, netlist, header in todo:
        ref = ProxyCost(netlist, header).evaluate().as_dict()["proxy"]
        budget_s = args.budget if name.startswith("ariane") else args.other_budget
        results = run_design(netlist, header, budget_s, args, args.policy)
        phases = results.pop("phases")
        sa = results["sa"][0]
        for method, (cost, evals, wall) in results.items():
            rows.append({"design": name, "method": method, "proxy": round(cost, 4),
                         "vs_sa": round(cost / sa, 4), "evaluations": evals, "wall_s": round(wall, 1),
                         "budget_s": budget_s, "input_proxy": round(ref, 4)})
        figures[name] = {"input_proxy": ref, "budget_s": budget_s,
                         **{m: {"proxy": c, "evaluations": e, "wall_s": w}
                            for m, (c, e, w) in results.items()},
                         "fine_tuned_phases": phases}
        print(markdown_table(rows[-len(results):]), flush=True)
    print()
    print(markdown_table(rows))
    print_json_line({"budget_s": args.budget, "other_budget_s": args.other_budget, "policy": args.policy,
                     "pretraining": trained, "samples": args.samples, "zero_shot_s": args.zero_shot,
                     "fd_iterations": args.fd_iterations, "incumbent_logit": args.incumbent_logit,
                     "designs": figures})


if __name__ == "__main__":
    main()
