"""The pictures a run ends with: loss curves per phase, and predictions next to their inputs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_losses(history: list[dict[str, object]], path: Path, keys: tuple[str, ...] = ("vertex", "chamfer")) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    steps = np.arange(len(history))
    ax.semilogy(steps, [float(h["loss"]) for h in history], "k-", label="total")  # type: ignore[arg-type]
    for key in keys:
        if any(key in h for h in history):
            ax.semilogy(steps, [float(h.get(key, np.nan)) for h in history], label=key)  # type: ignore[arg-type]
    for k in range(1, len(history)):
        if history[k]["phase"] != history[k - 1]["phase"]:
            ax.axvline(k - 0.5, color="grey", lw=0.8)
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_predictions(pairs: list[tuple[str, np.ndarray, np.ndarray]], triangles: np.ndarray, path: Path) -> None:
    """Input points (left) and the predicted face in template topology (right), coloured by depth;
    `pairs` holds (title, (N, 3) input points, (V, 3) predicted vertices)."""
    if not pairs:
        return
    fig, axes = plt.subplots(len(pairs), 2, figsize=(6, 3 * len(pairs)), squeeze=False)
    for row, (title, pts, face) in enumerate(pairs):
        axes[row, 0].scatter(pts[:, 0], pts[:, 1], c=pts[:, 2], s=0.3, cmap="viridis")
        axes[row, 1].tripcolor(face[:, 0], face[:, 1], triangles, face[:, 2], cmap="viridis", shading="gouraud")
        axes[row, 0].set_title(f"input: {title}", fontsize=8)
        axes[row, 1].set_title("prediction", fontsize=8)
        for ax in axes[row]:
            ax.set_aspect("equal")
            ax.set_xlim(-1, 1)
            ax.set_ylim(-1, 1)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
