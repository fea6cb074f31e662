#!/usr/bin/env python
"""Draw data_cards/toyworld_samples.png: sample toy-world scenes with their annotations and questions."""
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from llava_nb.toyworld import IMAGE_SIZE, annotation, ask, make_scenes, scene_rng

ROOT = Path(__file__).resolve().parents[1]

def main(n: int = 6, seed: int = 0) -> Path:
    scenes = make_scenes(seed, n, "test")
    fig, axes = plt.subplots(2, n // 2, figsize=(4.6 * (n // 2), 11.5))
    for ax, (i, scene) in zip(axes.flat, enumerate(scenes)):
        ax.imshow(scene.render(), interpolation="nearest", extent=(0, 1, 1, 0))
        ann = annotation(scene, f"test/{i:06d}.png", scene_rng(seed + 7, "test", i))
        for inst in ann["instances"]:
            x1, y1, x2, y2 = inst["bbox"]
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1, ec="black", ls="--"))
            ax.text(x1, y1 - 0.01, inst["category"], fontsize=7)
        qas = ask(scene, scene_rng(seed + 11, "test", i))
        ax.set_title(min(ann["captions"], key=len), fontsize=8)
        ax.set_xlabel("\n".join(f"{q.question} -> {q.answer}" for q in qas), fontsize=7, loc="left")
        ax.set_xticks([]); ax.set_yticks([])
    fig.suptitle(f"Toy world: {IMAGE_SIZE}x{IMAGE_SIZE} scenes, boxes from their annotations, exact-answer questions", fontsize=11)
    fig.tight_layout(rect=(0, 0.02, 1, 0.96)); fig.subplots_adjust(hspace=0.5, bottom=0.1)
    out = ROOT / "data_cards" / "toyworld_samples.png"
    fig.savefig(out, dpi=80)
    return out

if __name__ == "__main__": print(main())
