"""Tables, conclusion and plots of ``benchmarks/cascade_vs_joint.py`` from its result JSON
(the models' records: accuracy, budget, cost, stages), and the missing rows of a partial run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from common.scoring import CMC_RANKS


def pct(m: dict[str, float] | None, key: str = "mAP", second: str = "top1") -> str:
    return "—" if m is None else f"{100 * m[key]:.1f} / {100 * m[second]:.1f}"


def finished(world: dict[str, Any]) -> dict[str, dict]:
    return {n: m for n, m in world["models"].items() if m["status"] == "finished"}


def headline(world: dict[str, Any]) -> str | None:
    for m in finished(world).values():
        return m["subset"]["protocol_name"]
    return None


def accuracy_rows(world: dict[str, Any]) -> list[tuple[str, dict | None, dict | None,
                                                       dict | None, str]]:
    """(label, detected search, gt search, detection, note) per row; QEEPS rows per way."""
    rows = []
    for m in world["models"].values():
        label = f"{m['label']} (`{m['preset']}`)"
        if m["status"] != "finished":
            rows.append((label, None, None, None, m["status"] + (f": {m['reason']}"
                                                                 if m.get("reason") else "")))
        elif "subset_rows" in m["accuracy"]:
            rows += [(f"{m['label']}, {way}", None, None, None,
                      "query-guided: scored on the subset below")
                     for way in m["accuracy"]["subset_rows"]]
        else:
            a = m["accuracy"]
            rows.append((label, a["detected"], a["ground_truth"], a["detection"]["all"], ""))
    return rows


def subset_of(world: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Label -> metrics on the shared subset, every finished model and QEEPS way."""
    out = {}
    for m in finished(world).values():
        if "subset_rows" in m["accuracy"]:
            out.update({f"{m['label']}, {way}": s
                        for way, s in m["accuracy"]["subset_rows"].items()})
        else:
            out[m["label"]] = m["accuracy"]["subset"]
    return out


def cost_ways(world: dict[str, Any]) -> dict[str, dict[str, dict]]:
    """Label -> {gallery images: {"seconds", "measured"}} per query, every way of searching."""
    out = {}
    for m in finished(world).values():
        if "ways" in m["cost"]:
            out.update({f"{m['label']}, {w}": c for w, c in m["cost"]["ways"].items()})
        else:
            out[m["label"]] = m["cost"]["per_query"]
    return out


def fmt_seconds(c: dict[str, Any]) -> str:
    s = c["seconds"]
    text = f"{1000 * s:.1f} ms" if s < 1 else f"{s:.3g} s" if s < 3600 else f"{s / 3600:.1f} h"
    return text + ("" if c["measured"] else "*")


def budget_text(budgets: list[dict[str, Any]]) -> str:
    return "; ".join(f"{b['part']}: {b['epochs']} ep, {b['iterations']:,} it x "
                     f"{b['per_iteration']} = {b['seen']:,} {b['unit']}" for b in budgets)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Machine: {result['machine']['summary']}. Command: `{result['command']}`."]
    if result["partial"]:
        lines += ["", "**Partial**: " + "; ".join(result["missing"]) + "."]
    sizes = result["settings"]["gallery_sizes"]
    for fmt, world in result["worlds"].items():
        facts, top = world.get("facts"), headline(world)
        protocols = next((list(m["accuracy"]["detected"]) for m in finished(world).values()
                          if "detected" in m["accuracy"]), [])
        lines += ["", f"#### {fmt.upper()}-format world"
                  + (f" ({facts['train_images']} train images, {facts['train_identities']} train "
                     f"identities; {facts['test_images']} test images, {facts['queries']} "
                     "queries)" if facts else ""), "",
                  "Search mAP / top-1 (%) on the gallery's detections and on ground-truth "
                  "boxes; detection AP / recall (%, all people, IoU 0.5):", ""]
        head = ([f"{p}, detected" for p in protocols] + [f"{p}, GT boxes" for p in protocols]
                + ["detection AP / recall"])
        lines += ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
        for label, det, gt, box, note in accuracy_rows(world):
            if det is None:
                cells = [note] + ["—"] * (len(head) - 1)
            else:
                cells = ([pct(det[p]) for p in protocols] + [pct(gt[p]) for p in protocols]
                         + [pct(box, "ap", "recall")])
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        subset = subset_of(world)
        if subset:
            desc = next(iter(subset.values()))["subset"] or "the full protocol"
            lines += ["", f"Every model on QEEPS's subset ({top}: {desc}), detected boxes, "
                      "mAP / top-1 (%):", "", "| model | mAP / top-1 |", "|---|---:|"]
            lines += [f"| {label} | {pct(m)} |" for label, m in subset.items()]
        lines += ["", "Training budget and cost per query (* extrapolated, formulas below):", "",
                  "| model | training (epochs, iterations x samples per iteration) | train min | "
                  "gallery images/s | query ms (embed + search) | "
                  + " | ".join(f"{n:,} images" for n in sizes) + " |",
                  "|---|---|---:|---:|---:|" + "---:|" * len(sizes)]
        for m in finished(world).values():
            c = m["cost"]
            if "ways" in c:
                for way, per in c["ways"].items():
                    lines.append(f"| {m['label']}, {way} | {budget_text(m['budget'])} | "
                                 f"{m['train_seconds'] / 60:.1f} | | | "
                                 + " | ".join(fmt_seconds(per[str(n)]) for n in sizes)
                                 + " |")
                continue
            lines.append(f"| {m['label']} | {budget_text(m['budget'])} | "
                         f"{m['train_seconds'] / 60:.1f} | {c['gallery_images_per_s']:.1f} | "
                         f"{c['query_ms_median']:.1f} | "
                         + " | ".join(fmt_seconds(c["per_query"][str(n)]) for n in sizes)
                         + " |")
        lines += ["", "Formulas: " + "; ".join(
            f"{m['label']}: {m['cost']['formula']}" for m in finished(world).values())
            + ". Search cost is exact (flat) FAISS search, measured on random unit vectors up "
            f"to {result['settings']['measure_max']:,} images; `psearch index` switches to IVF "
            "above 100k rows, which is faster (benchmarks/gallery_scale.py)."]
        lines += ["", "Stages (s; r = reused): " + "; ".join(
            f"{m['label']}: " + ", ".join(f"{k} {v['seconds']:.0f}{' r' if v['reused'] else ''}"
                                          for k, v in m.get("stages", {}).items())
            for m in finished(world).values())]
    lines += ["", "**Conclusion.** " + conclusion(result)]
    return "\n".join(lines) + "\n"


def figure(m: dict[str, Any], key: str, protocol: str, metric: str = "mAP") -> float:
    """A finished indexed model's ``metric`` on ``key`` (detected, ground_truth: search under
    ``protocol``; detection: all people)."""
    a = m["accuracy"]
    return a["detection"]["all"][metric] if key == "detection" else a[key][protocol][metric]


def leader(models: dict[str, dict], key: str, protocol: str, metric: str = "mAP"
           ) -> tuple[str, float]:
    name = max(models, key=lambda n: figure(models[n], key, protocol, metric))
    return name, figure(models[name], key, protocol, metric)


def conclusion(result: dict[str, Any]) -> str:
    """Plain words computed from the figures: who leads on what, by how much, at what cost."""
    parts = []
    for fmt, world in result["worlds"].items():
        done = {n: m for n, m in finished(world).items() if "detected" in m["accuracy"]}
        top = headline(world)
        if not done or top is None:
            parts.append(f"{fmt.upper()}: no finished model yet.")
            continue
        text = [f"{fmt.upper()} ({top}):"]
        name, v = leader(done, "detected", top)
        if len(done) == 1:  # nothing to compare yet: the model's own figures
            label, gt = done[name]["label"], figure(done[name], "ground_truth", top)
            ap = figure(done[name], "detection", top, "ap")
            parts.append(" ".join(text) + f" only {label} has finished: {100 * v:.1f}% mAP on "
                         f"detected boxes, {100 * gt:.1f}% on ground-truth boxes, "
                         f"{100 * ap:.1f}% detection AP.")
            continue
        others = {n: m for n, m in done.items() if n != name}
        runner = ""
        if others:
            second, sv = leader(others, "detected", top)
            runner = (f", tied with {done[second]['label']}" if round(100 * (v - sv), 1) == 0
                      else f", {100 * (v - sv):.1f} points ahead of {done[second]['label']}")
        text.append(f"{done[name]['label']} leads search on detected boxes with "
                    f"{100 * v:.1f}% mAP{runner}.")
        joint = {n: m for n, m in done.items() if m.get("kind") == "joint"}
        if "cascade" in done and joint:
            j, jv = leader(joint, "detected", top)
            c = figure(done["cascade"], "detected", top)
            verdict = ("they tie" if round(100 * c, 1) == round(100 * jv, 1) else
                       f"{'the cascade' if c > jv else 'the joint model'} wins by "
                       f"{100 * abs(c - jv):.1f} points")
            text.append(f"Cascade {100 * c:.1f}% against the best joint model "
                        f"({done[j]['label']}) {100 * jv:.1f}%: {verdict}, with "
                        f"{done['cascade']['train_seconds'] / 60:.1f} min of training against "
                        f"{done[j]['train_seconds'] / 60:.1f}.")
        g, gv = leader(done, "ground_truth", top)
        d, dv = leader(done, "detection", top, "ap")
        text.append(f"On ground-truth boxes {done[g]['label']} re-identifies best "
                    f"({100 * gv:.1f}% mAP); {done[d]['label']} detects best "
                    f"({100 * dv:.1f}% AP).")
        ways = cost_ways(world)
        big = str(result["settings"]["gallery_sizes"][-1])
        cheap = min(ways, key=lambda w: ways[w][big]["seconds"])
        dear = max(ways, key=lambda w: ways[w][big]["seconds"])
        text.append(f"At {int(big):,} gallery images a query costs least with {cheap} "
                    f"({fmt_seconds(ways[cheap][big])}) and most with {dear} "
                    f"({fmt_seconds(ways[dear][big])}).")
        qeeps = world["models"].get("qeeps", {})
        if qeeps.get("status") == "finished":
            sub = subset_of(world)
            lead = max(sub, key=lambda k: sub[k]["mAP"])
            text.append(f"On QEEPS's subset {lead} leads ({100 * sub[lead]['mAP']:.1f}% mAP).")
            base = world["models"].get("oim_c4", {})
            if base.get("status") == "finished":
                b = base["accuracy"]["subset"]["mAP"]
                ways = ", ".join(f"{way} {100 * r['mAP']:.1f}%" for way, r in
                                 qeeps["accuracy"]["subset_rows"].items())
                text.append(f"QEEPS against its base ({base['label']}, {100 * b:.1f}% there): "
                            f"{ways}.")
        parts.append(" ".join(text))
    if result["partial"]:
        parts.append("Partial: the models not finished (listed at the top) are left out of "
                     "these comparisons.")
    return " ".join(parts)


def plot(result: dict[str, Any], cmc_path: Path, cost_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = list(CMC_RANKS)
    worlds = [(fmt, w) for fmt, w in result["worlds"].items() if finished(w)]
    n = max(1, len(worlds))
    fig, axes = plt.subplots(n, 2, figsize=(13, 4.8 * n), squeeze=False)
    for (fmt, world), row in zip(worlds, axes, strict=False):
        top = headline(world)
        colours = {name: f"C{i}" for i, name in enumerate(world["models"])}
        for name, m in finished(world).items():
            if "detected" in m["accuracy"]:
                row[0].plot(ranks, [100 * v for v in m["accuracy"]["detected"][top]["cmc"]],
                            color=colours[name], label=f"{m['label']}, detected")
                row[0].plot(ranks, [100 * v for v in m["accuracy"]["ground_truth"][top]["cmc"]],
                            "--", color=colours[name], alpha=0.6, label=f"{m['label']}, GT boxes")
        for i, (label, m) in enumerate(subset_of(world).items()):
            row[1].plot(ranks, [100 * v for v in m["cmc"]], color=f"C{i}", label=label)
        row[0].set_title(f"{fmt.upper()}-format world, {top}, full protocol")
        row[1].set_title(f"{fmt.upper()}, QEEPS's subset (detected boxes)")
        for ax in row:
            ax.set(xlabel="rank k", ylabel="top-k (%)", ylim=(0, 100), xlim=(1, ranks[-1]),
                   xticks=[1, 5, 10, 15, 20])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="lower right")
    save_figure(fig, cmc_path)

    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.8), squeeze=False)
    for (fmt, world), ax in zip(worlds, axes[0], strict=False):
        for i, (label, per) in enumerate(cost_ways(world).items()):
            sizes = [int(s) for s in per]
            seconds = [per[str(s)]["seconds"] for s in sizes]
            ax.loglog(sizes, seconds, "-", color=f"C{i}", label=label)
            measured = [per[str(s)]["measured"] for s in sizes]
            ax.scatter(sizes, seconds, color=f"C{i}", s=18,
                       facecolors=[f"C{i}" if m else "none" for m in measured])
        ax.set(title=f"{fmt.upper()}-format world: cost per query (hollow: extrapolated)",
               xlabel="gallery images", ylabel="seconds per query")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    save_figure(fig, cost_path)


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(result: dict[str, Any], out: Path, write_json: bool = True) -> None:
    from psearch.core.io import write_json_atomic, write_text_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    if write_json:
        write_json_atomic(out, result)
    table = markdown(result)
    write_text_atomic(out.with_suffix(".md"), table)
    plot(result, out.with_name(out.stem + "_cmc.png"), out.with_name(out.stem + "_cost.png"))
    print("\n" + table)
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.stem}_cmc.png, {out.stem}_cost.png")


def missing(worlds: dict[str, Any]) -> list[str]:
    return [f"{fmt}/{name}: {m['status']}" + (f" ({m['reason']})" if m.get("reason") else "")
            for fmt, w in worlds.items() for name, m in w["models"].items()
            if m["status"] != "finished"]
