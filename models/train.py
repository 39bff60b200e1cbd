"""Training FaceNet with paper 1's three-phase schedule, on CPU or GPU, from synth and scans stores.

Phase 1 trains the encoder and the identity decoder on neutral faces, phase 2 the expression
decoder with the identity decoder frozen on expression faces, phase 3 everything on all faces; each
phase first on synthetic faces only (supervised), then mixed with raw scans (unsupervised). Batches
depend only on (seed, phase, epoch), so a run resumed from a checkpoint continues exactly as an
uninterrupted one. Checkpoints hold state dicts and plain values: they load with weights_only=True.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facepipe.models.basis import pca_basis, training_offsets
from facepipe.models.losses import (chamfer, edge_lengths, edge_loss, gather, laplacian_loss, neighbour_table, normal_loss,
                                    ray_partners, vertex_l1, vertex_normals)
from facepipe.models.network import FaceNet
from facepipe.models.run_files import load_state, open_run, restore, save_atomic, start_records, write_history
from facepipe.models.store_dataset import StoreDataset
from facepipe.pipeline.errors import FacepipeError
from facepipe.pipeline.faces.template import Template, load_template
from facepipe.pipeline.runtime.store import OK, open_group, read_plan, read_status
from facepipe.schemas.train import Phase, TrainConfig


class TrainError(FacepipeError):
    """A run that cannot start: stores made with another template, no neutral faces, a bad checkpoint."""


@dataclass
class TemplateTensors:
    triangles: torch.Tensor
    edges: torch.Tensor
    lengths: torch.Tensor  # (1, E) template edge lengths
    neighbours: torch.Tensor
    counts: torch.Tensor
    mouth: torch.Tensor

    @staticmethod
    def of(template: Template, device: torch.device) -> TemplateTensors:
        edges = template.edges()
        table, counts = neighbour_table(edges, len(template.vertices))
        verts = torch.as_tensor(template.vertices, dtype=torch.float32)[None]
        e = torch.as_tensor(edges)
        mouth = template.regions.get("mouth", np.zeros(0, np.int64))
        return TemplateTensors(torch.as_tensor(template.triangles).to(device), e.to(device), edge_lengths(verts, e).to(device),
                               table.to(device), counts.to(device), torch.as_tensor(mouth).to(device))


class Samples:
    """The ok samples of one store: on the device when they fit under the memory limit, else read per batch."""

    def __init__(self, url: str, template: Template, supervised: bool, config: TrainConfig, device: torch.device) -> None:
        group = open_group(url, "r")
        plan = read_plan(group, url)
        if plan.template_id != template.id:
            raise TrainError(f"{url} was made with template {plan.template_id}, this run uses {template.id} ({template.name})")
        if supervised and "vertices" not in group:
            raise TrainError(f"{url} is a {plan.kind} store without ground-truth vertices; give it under scans, not synth")
        self.url, self.device = url, device
        self.arrays = ("points", "normals", "vertices") if supervised else ("points", "normals")
        ok = np.flatnonzero(read_status(group) == OK)
        expression = group["expression"][:]
        self.neutral = np.array([str(expression[i]) in config.neutral_codes for i in ok])
        size = sum(int(np.prod(group[a].shape[1:])) * 4 for a in self.arrays) * len(ok)
        self.dataset: StoreDataset | None = None
        self.tensors: dict[str, torch.Tensor] | None = None
        if size <= config.memory_limit_gb * 1e9:
            self.tensors = {a: torch.as_tensor(np.asarray(group[a][:])[ok], dtype=torch.float32).to(device) for a in self.arrays}
        else:  # read per batch, sample by sample
            self.dataset = StoreDataset(url, self.arrays)

    def __len__(self) -> int:
        return len(self.neutral)

    def batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        if self.tensors is not None:
            ix = torch.as_tensor(index, device=self.device)
            return {a: t[ix] for a, t in self.tensors.items()}
        items = [self.dataset[int(i)] for i in index]  # type: ignore[index]
        return {a: torch.stack([it[a] for it in items]).float().to(self.device) for a in self.arrays}


def pick(samples: Samples, phase: str) -> np.ndarray:
    """Which samples a phase trains on: neutral faces, expression faces, or all."""
    if phase == "identity":
        return np.flatnonzero(samples.neutral)
    if phase == "expression":
        return np.flatnonzero(~samples.neutral)
    return np.arange(len(samples))


def subsample(points: torch.Tensor, normals: torch.Tensor, count: int | None, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random subset of each sample's points (also a reshuffle of their order: the paper's augmentation)."""
    n = points.shape[1]
    k = n if count is None else min(count, n)
    idx = torch.as_tensor(np.stack([rng.permutation(n)[:k] for _ in range(len(points))]), device=points.device)
    return gather(points, idx), gather(normals, idx)


def set_phase(net: FaceNet, phase: str, fixed_bases: bool = False) -> None:
    """Phase 1: encoder + identity; phase 2: identity decoder frozen; phase 3: everything;
    `fixed_bases`: a basis decoder's bases stay as they started in every phase."""
    for p in net.parameters():
        p.requires_grad_(True)
    frozen = {"identity": [net.expression_head, net.expression_decoder], "expression": [net.identity_decoder], "joint": []}[phase]
    if fixed_bases:
        frozen = frozen + [net.identity_decoder.basis, net.expression_decoder.basis]  # type: ignore[list-item]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)


def supervised_loss(pred: torch.Tensor, target: torch.Tensor, tt: TemplateTensors, config: TrainConfig) -> dict[str, torch.Tensor]:
    w = config.weights
    return {"vertex": vertex_l1(pred, target),
            "normal": w.normal * normal_loss(vertex_normals(pred, tt.triangles), vertex_normals(target, tt.triangles)),
            "edge": w.edge * edge_loss(pred, edge_lengths(target, tt.edges), tt.edges)}


def unsupervised_loss(pred: torch.Tensor, points: torch.Tensor, normals: torch.Tensor, tt: TemplateTensors,
                      config: TrainConfig, clock: Clock, normal_rays: bool = False) -> dict[str, torch.Tensor]:
    w = config.weights
    pred_normals = vertex_normals(pred, tt.triangles)
    with clock("nearest"):
        cd, partners = chamfer(pred, points, w.chamfer_threshold)
        if normal_rays:
            partners = ray_partners(pred, pred_normals, points)
    out = {"chamfer": cd,
           "scan_normal": w.normal * normal_loss(pred_normals, gather(normals, partners)),
           "template_edge": w.edge * edge_loss(pred, tt.lengths.expand(len(pred), -1), tt.edges)}
    if len(tt.mouth):
        out["laplacian"] = w.laplacian * laplacian_loss(pred, tt.neighbours, tt.counts, tt.mouth)
    return out


class Clock:
    """Seconds per step kind (data, nearest, forward, backward), synchronised on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def pick_device(device: str) -> torch.device:
    """"auto" | "cpu" | "cuda" as a device; under torchrun, this rank's GPU."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainError("device cuda asked for, but torch sees no CUDA device")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


@dataclass
class Run:
    """Everything one training run holds; `epoch()` trains one epoch of one phase."""

    config: TrainConfig
    template: Template
    device: torch.device
    net: FaceNet
    model: torch.nn.Module  # the net, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    synth: list[Samples]
    real: list[Samples]
    tt: TemplateTensors
    rank: int = 0
    world: int = 1

    normal_rays: bool = False  # switched on for good once the Chamfer saturates (see `saturated`)
    fixed_bases: bool = False  # a basis decoder whose bases are a PCA of the training faces, kept as they are

    def epoch(self, phase_index: int, phase: Phase, epoch: int) -> dict[str, float]:
        cfg = self.config
        set_phase(self.net, phase.name, self.fixed_bases)
        lr = cfg.lr * 0.5 ** (epoch // cfg.lr_halve_every)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mixed = epoch >= phase.synthetic_epochs and bool(self.real)
        rng = np.random.default_rng([cfg.seed, phase_index, epoch])
        synth = [(k, i) for k, s in enumerate(self.synth) for i in pick(s, phase.name)]
        real = [(k, i) for k, s in enumerate(self.real) for i in pick(s, phase.name)] if mixed else []
        if not synth:
            raise TrainError(f"phase {phase.name}: no synthetic {'neutral' if phase.name == 'identity' else 'expression'} faces")
        n_real = round(cfg.batch_size * cfg.real_fraction) if real else 0
        n_synth = max(cfg.batch_size - n_real, 1)
        order = [synth[j] for j in rng.permutation(len(synth))]
        real_order = [real[j] for j in rng.permutation(len(real))] if real else []
        batches = [order[i:i + n_synth] for i in range(0, len(order), n_synth)]
        if self.world > 1:  # every rank must take the same number of steps, or the gradient all-reduce waits forever
            batches = [batches[k % len(batches)] for k in range(max(len(batches) // self.world, 1) * self.world)]
        clock = Clock(self.device)
        totals: dict[str, float] = {}
        self.model.train()
        t0 = time.perf_counter()
        seen = 0
        for b, part in enumerate(batches):
            step_rng = np.random.default_rng([cfg.seed, phase_index, epoch, b])
            reals = [real_order[(b * n_real + j) % len(real_order)] for j in range(n_real)] if real_order else []
            if b % self.world != self.rank:
                continue
            with clock("data"):
                data = [self._gather(self.synth, part, step_rng)]
                if reals:
                    data.append(self._gather(self.real, reals, step_rng))
            losses = self._step(phase.name, data, len(part), clock)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v * (len(part) + len(reals))
            seen += len(part) + len(reals)
        seconds = time.perf_counter() - t0
        metrics = {k: v / max(seen, 1) for k, v in totals.items()}
        return metrics | {"lr": lr, "mixed": float(mixed), "normal_rays": float(self.normal_rays and mixed), "samples": float(seen), "seconds": seconds,
                          "samples_per_s": seen / seconds if seconds > 0 else 0.0} | {f"s_{k}": v for k, v in clock.seconds.items()}

    def _gather(self, stores: list[Samples], picks: list[tuple[int, int]], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        by_store: dict[int, list[int]] = {}
        for k, i in picks:
            by_store.setdefault(k, []).append(i)
        parts = [stores[k].batch(np.array(ix)) for k, ix in sorted(by_store.items())]
        batch = {a: torch.cat([p[a] for p in parts]) for a in parts[0]}
        batch["points"], batch["normals"] = subsample(batch["points"], batch["normals"], self.config.input_points, rng)
        return batch

    def _step(self, phase: str, data: list[dict[str, torch.Tensor]], n_synth: int, clock: Clock) -> dict[str, float]:
        points = torch.cat([d["points"] for d in data])
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" and self.config.amp
                    else nullcontext())
        with clock("forward"), autocast:
            out = self.model(points, with_expression=phase != "identity")
        pred = out["face"].float()
        terms = supervised_loss(pred[:n_synth], data[0]["vertices"], self.tt, self.config)
        if len(data) > 1:
            real = unsupervised_loss(pred[n_synth:], data[1]["points"], data[1]["normals"], self.tt, self.config, clock,
                                     self.normal_rays)
            share = (len(pred) - n_synth) / len(pred)
            terms = {k: v * (1 - share) for k, v in terms.items()} | {k: v * share for k, v in real.items()}
        loss = sum(terms.values())
        with clock("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            self.optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()} | {"loss": float(loss.detach())}  # type: ignore[union-attr]


def preview_pairs(run: Run) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(title, input points, predicted face) for the first few synthetic and real samples: the picture a run ends with."""
    picks = [(s, i) for s in run.synth[:1] + run.real[:1] for i in range(min(run.config.preview_samples // 2 or 1, len(s)))]
    run.net.eval()
    out = []
    with torch.no_grad():
        for samples, i in picks:
            batch = samples.batch(np.array([i]))
            face = run.net(batch["points"])["face"][0].float().cpu().numpy()
            out.append((f"{Path(samples.url).name} #{i}", batch["points"][0].cpu().numpy(), face))
    return out


def saturated(history: list[dict[str, object]], epochs: int, tolerance: float) -> bool:
    """Whether the Chamfer loss of the last `epochs` + 1 mixed epochs fell by less than `tolerance` (relative)."""
    values = [float(h["chamfer"]) for h in history if h.get("mixed") and "chamfer" in h][-(epochs + 1):]  # type: ignore[arg-type]
    return len(values) == epochs + 1 and values[0] > 0 and (values[0] - values[-1]) / values[0] < tolerance


def schedule(config: TrainConfig) -> list[tuple[int, Phase, int]]:
    return [(i, p, e) for i, p in enumerate(config.phases) for e in range(p.synthetic_epochs + p.mixed_epochs)]


def stores_template(config: TrainConfig) -> Template | None:
    """The template the training stores were made in, as the first synth store carries it (the others
    must match it: each `Samples` checks)."""
    from facepipe.pipeline.runtime.sources import store_template

    return store_template(config.synth[0])


def template_state(template: Template) -> dict[str, object]:
    """The template as tensors and strings: a checkpoint that carries it loads with weights_only=True and
    works wherever the run is copied (its config's template path may not exist there)."""
    return {"name": template.name, "id": template.id, "vertices": torch.from_numpy(template.vertices.copy()),
            "triangles": torch.from_numpy(template.triangles.copy()), "landmarks": torch.from_numpy(template.landmarks.copy()),
            "unit_mm": template.unit_mm, "center_mm": torch.from_numpy(template.center_mm.copy()),
            "regions": {k: torch.from_numpy(np.asarray(v, np.int64).copy()) for k, v in template.regions.items()}}


def template_from_state(state: dict[str, object], where: Path) -> Template:
    """The template a checkpoint carries, checked against its recorded id."""
    t = Template(str(state["name"]), state["vertices"].numpy().astype(np.float64),  # type: ignore[attr-defined]
                 state["triangles"].numpy().astype(np.int64), state["landmarks"].numpy().astype(np.float64),  # type: ignore[attr-defined]
                 float(state["unit_mm"]), state["center_mm"].numpy().astype(np.float64),  # type: ignore[arg-type, attr-defined]
                 {k: v.numpy().astype(np.int64) for k, v in state["regions"].items()})  # type: ignore[attr-defined]
    if t.id != state["id"]:
        raise TrainError(f"{where}: the template it carries hashes to {t.id}, not its recorded {state['id']}")
    return t


def save_checkpoint(path: Path, run: Run, phase_index: int, epoch: int) -> None:
    save_atomic({"model": run.net.state_dict(), "optimizer": run.optimizer.state_dict(), "phase": phase_index, "epoch": epoch,
                 "template_id": run.template.id, "template": template_state(run.template), "config": run.config.model_dump_json(),
                 "torch_rng": torch.get_rng_state()}, path)


load_checkpoint = load_state


def build(config: TrainConfig, template: Template) -> Run:
    torch.manual_seed(config.seed)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = pick_device(config.device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    synth = [Samples(u, template, True, config, device) for u in config.synth]  # checks the stores first
    real = [Samples(u, template, False, config, device) for u in config.scans]
    net = FaceNet(len(template.vertices), config.identity_dim, config.expression_dim, config.hidden, config.decoder,
                  config.basis_size, torch.as_tensor(template.vertices))
    fixed = False
    if config.decoder == "basis":  # before DDP, which copies rank 0's parameters to every rank
        identity, expression = training_offsets(config.synth, template, config.neutral_codes, config.seed)
        net.set_bases(torch.as_tensor(pca_basis(identity, config.basis_size)), torch.as_tensor(pca_basis(expression, config.basis_size)))
        fixed = not config.basis_trainable and len(identity) > 0 and len(expression) > 0  # a basis of no data must learn
    net = net.to(device)
    model: torch.nn.Module = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                                          find_unused_parameters=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    return Run(config, template, device, net, model, optimizer, synth, real, TemplateTensors.of(template, device), rank, world,
               fixed_bases=fixed)


def train(config: TrainConfig, out: Path, resume: bool = False, log: Callable[[str], None] = print) -> list[dict[str, object]]:
    """Run the schedule, writing `config.json`, `metrics.jsonl`, TensorBoard scalars, checkpoints and, at the end, the PNGs."""
    from facepipe.pipeline.faces.procedural import default_template

    template = load_template(config.template) if config.template else stores_template(config) or default_template()
    last = open_run(out, config, resume)
    run = build(config, template)
    done = -1
    if resume:
        state = load_checkpoint(last)
        if state["template_id"] != template.id:
            raise TrainError(f"{last}: trained with template {state['template_id']}, not {template.id}")
        restore(state, "model", run.net, run.optimizer)
        done = next(k for k, (i, _, e) in enumerate(schedule(config)) if (i, e) == (state["phase"], state["epoch"]))
        log(f"resuming after phase {config.phases[int(state['phase'])].name} epoch {state['epoch']}")  # type: ignore[call-overload]
    history, writer = start_records(out, config, done, run.rank)
    try:
        for k, (i, phase, epoch) in enumerate(schedule(config)):
            if k <= done:
                continue
            w = config.weights
            run.normal_rays = w.normal_rays and (run.normal_rays or saturated(history, w.saturation_epochs, w.saturation_tolerance))
            metrics = run.epoch(i, phase, epoch)
            record = {"phase": phase.name, "epoch": epoch, "step": k} | metrics
            history.append(record)
            if run.rank == 0:
                write_history(out, history)
                save_checkpoint(last, run, i, epoch)
                for key, value in metrics.items():
                    writer.add_scalar(key, value, k)  # type: ignore[union-attr]
                writer.flush()  # type: ignore[union-attr]
                log(f"{phase.name:>10} epoch {epoch:>3}  loss {metrics['loss']:.5f}  {metrics['samples_per_s']:.1f} samples/s"
                    + ("  (mixed)" if metrics["mixed"] else ""))
    except KeyboardInterrupt:
        if writer is not None:
            writer.close()
        if run.rank == 0:
            save_checkpoint(out / "checkpoints" / "interrupted.pt", run, -1, -1)
            log("interrupted: checkpoints/last.pt holds the last finished epoch; resuming continues from it")
        raise
    if writer is not None:
        writer.close()
    if run.rank == 0:
        from facepipe.models.plots import plot_losses, plot_predictions

        plot_losses(history, out / "losses.png")
        plot_predictions(preview_pairs(run), run.template.triangles, out / "predictions.png")
        torch.save({"model": run.net.state_dict(), "template_id": template.id, "template": template_state(template),
                    "config": config.model_dump_json()},
                   out / "model.pt")
        template.save(out / "template.npz")  # for --template of the NICP baseline on the same template
    return history

