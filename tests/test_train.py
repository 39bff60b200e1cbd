"""Training: phase freezing, exact resume after an interruption, a tiny run that learns, guards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facepipe.models import train as train_mod
from facepipe.models.network import FaceNet
from facepipe.models.run_files import RunDirError
from facepipe.models.train import TrainError, set_phase, train
from facepipe.pipeline.faces.procedural import default_template, procedural_model
from facepipe.pipeline.faces.template import template_selection
from facepipe.pipeline.io.sample_data import write_example_dataset
from facepipe.pipeline.stages.ingest import run_ingest
from facepipe.pipeline.stages.synth import run_synth
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig
from facepipe.schemas.train import Phase, TrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("train")
    model = procedural_model()
    selection, _ = template_selection(model)
    synth = str(folder / "synth.zarr")
    run_synth(model, default_template(), selection, synth,
              SynthConfig(model="procedural", model_id=model.id, identities=8, expressions=1, n_points=1024), options=RunOptions(processes=False))
    write_example_dataset(folder / "data" / "example", subjects=1)
    (folder / "catalog.yaml").write_text((REPO / "data_catalog.yaml").read_text())
    scans = str(folder / "scans.zarr")
    run_ingest("example", folder / "catalog.yaml", scans, default_template(), overrides={"n_points": 1024}, options=RunOptions(processes=False))
    return synth, scans


def small(synth: str, scans: str, **kw: object) -> TrainConfig:
    return TrainConfig.model_validate({
        "synth": [synth], "scans": [scans], "identity_dim": 16, "expression_dim": 8, "hidden": 64, "input_points": 256,
        "batch_size": 4, "lr": 1e-3, "device": "cpu", "preview_samples": 2,
        "phases": [{"name": "identity", "synthetic_epochs": 3, "mixed_epochs": 1},
                   {"name": "expression", "synthetic_epochs": 1, "mixed_epochs": 1},
                   {"name": "joint", "synthetic_epochs": 1, "mixed_epochs": 1}]} | kw)


def test_phases_freeze_what_the_paper_freezes() -> None:
    net = FaceNet(vertices=20, identity_dim=4, expression_dim=4, hidden=8)
    set_phase(net, "identity")
    assert not any(p.requires_grad for p in net.expression_decoder.parameters())
    assert all(p.requires_grad for p in net.identity_decoder.parameters()) and all(p.requires_grad for p in net.encoder.parameters())
    set_phase(net, "expression")
    assert not any(p.requires_grad for p in net.identity_decoder.parameters())
    assert all(p.requires_grad for p in net.expression_decoder.parameters())
    set_phase(net, "joint")
    assert all(p.requires_grad for p in net.parameters())


def test_a_tiny_run_learns_and_writes_its_outputs(stores: tuple[str, str], tmp_path: Path) -> None:
    cfg = small(*stores, decoder="paper", phases=[{"name": "identity", "synthetic_epochs": 8, "mixed_epochs": 1},
                                 {"name": "expression", "synthetic_epochs": 1, "mixed_epochs": 1},
                                 {"name": "joint", "synthetic_epochs": 1, "mixed_epochs": 1}])
    history = train(cfg, tmp_path / "run", log=lambda _: None)
    assert len(history) == 13 and [h["phase"] for h in history[:9]] == ["identity"] * 9
    identity = [h for h in history if h["phase"] == "identity" and not h["mixed"]]
    assert identity[-1]["vertex"] < 0.7 * identity[0]["vertex"]  # the supervised vertex error falls
    mixed = [h for h in history if h["mixed"]]
    assert mixed and all("chamfer" in h and np.isfinite(h["chamfer"]) for h in mixed)
    for name in ("config.json", "metrics.jsonl", "losses.png", "predictions.png", "model.pt", "checkpoints/last.pt"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == list(range(13))
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert state["template_id"] == default_template().id


def test_the_expression_phase_leaves_the_identity_decoder_alone(stores: tuple[str, str], tmp_path: Path) -> None:
    cfg = small(*stores, phases=[{"name": "identity", "synthetic_epochs": 1, "mixed_epochs": 0},
                                 {"name": "expression", "synthetic_epochs": 2, "mixed_epochs": 0}])
    train(cfg, tmp_path / "a", log=lambda _: None)
    cfg1 = small(*stores, phases=[{"name": "identity", "synthetic_epochs": 1, "mixed_epochs": 0}])
    train(cfg1, tmp_path / "b", log=lambda _: None)
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("identity_decoder."))
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("expression_decoder."))


def test_resume_after_an_interruption_ends_exactly_where_an_uninterrupted_run_does(
        stores: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small(*stores)
    full = train(cfg, tmp_path / "full", log=lambda _: None)
    real_epoch = train_mod.Run.epoch
    calls = {"n": 0}

    def interrupted(self: train_mod.Run, *args: object) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_epoch(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(train_mod.Run, "epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", log=lambda _: None)
    assert (tmp_path / "cut" / "checkpoints" / "interrupted.pt").exists()
    monkeypatch.setattr(train_mod.Run, "epoch", real_epoch)
    with pytest.raises(RunDirError, match="already has a run"):
        train(cfg, tmp_path / "cut", log=lambda _: None)
    resumed = train(cfg, tmp_path / "cut", resume=True, log=lambda _: None)
    assert [h["loss"] for h in resumed] == [h["loss"] for h in full]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(RunDirError, match="another config"):
        train(small(*stores, lr=5e-4), tmp_path / "cut", resume=True, log=lambda _: None)


def test_guards(stores: tuple[str, str], tmp_path: Path) -> None:
    synth, scans = stores
    with pytest.raises(TrainError, match="without ground-truth vertices"):
        train(small(scans, scans), tmp_path / "x", log=lambda _: None)
    other = tmp_path / "other.npz"
    from facepipe.pipeline.faces.template import template_from_model

    template_from_model(procedural_model(), target_vertices=4000).save(other)
    with pytest.raises(TrainError, match="was made with template"):
        train(small(synth, scans, template=str(other)), tmp_path / "y", log=lambda _: None)
    with pytest.raises(RunDirError, match="nothing to resume"):
        train(small(synth, scans), tmp_path / "z", resume=True, log=lambda _: None)
    assert Phase(name="joint").synthetic_epochs == 10  # the paper's schedule is the default


@pytest.mark.slow
def test_two_process_ddp_run_with_torchrun(stores: tuple[str, str], tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    cfg = small(*stores)
    (tmp_path / "train.json").write_text(cfg.model_dump_json())
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "facepipe.cli.app", "train", "--config", "train.json",
                          "--out", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("epochs     8") == 1  # one summary, from rank 0
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 8 and history[-1]["loss"] < history[0]["loss"]


def test_stores_over_the_memory_limit_are_streamed_with_the_same_result(stores: tuple[str, str], tmp_path: Path) -> None:
    one_phase = [{"name": "identity", "synthetic_epochs": 1, "mixed_epochs": 1}]
    held = train(small(*stores, phases=one_phase), tmp_path / "held", log=lambda _: None)
    streamed = train(small(*stores, phases=one_phase, memory_limit_gb=1e-9), tmp_path / "streamed", log=lambda _: None)
    assert [h["loss"] for h in streamed] == pytest.approx([h["loss"] for h in held], rel=1e-6)


def test_saturation_switches_on_normal_rays() -> None:
    from facepipe.models.train import saturated

    falling = [{"mixed": 1.0, "chamfer": c} for c in (1.0, 0.8, 0.6, 0.5)]
    flat = [{"mixed": 1.0, "chamfer": c} for c in (0.5, 0.499, 0.498, 0.4975)]
    assert not saturated(falling, 3, 0.01) and saturated(falling + flat, 3, 0.01)
    assert not saturated(flat[:2], 3, 0.01)  # too few mixed epochs to tell


def test_a_run_switches_to_normal_rays_once_saturated(stores: tuple[str, str], tmp_path: Path) -> None:
    cfg = small(*stores, weights={"saturation_epochs": 1, "saturation_tolerance": 10.0})  # saturated after two mixed epochs
    history = train(cfg, tmp_path / "run", log=lambda _: None)
    rays = [h["normal_rays"] for h in history if h["mixed"]]
    assert rays == [0.0, 0.0, 1.0] and np.isfinite(history[-1]["scan_normal"])


def test_a_basis_run_starts_as_the_template_with_the_linear_model_of_its_data(stores: tuple[str, str]) -> None:
    from facepipe.models.basis import training_offsets

    template = default_template()
    run = train_mod.build(small(*stores, decoder="basis", basis_size=12), template)
    points = torch.as_tensor(np.asarray(train_mod.open_group(stores[0])["points"][:2]), dtype=torch.float32)
    with torch.no_grad():
        face = run.net.eval()(points)["face"]
    assert torch.allclose(face, torch.as_tensor(template.vertices, dtype=torch.float32).expand(2, -1, -1))
    identity, expression = training_offsets([stores[0]], template, run.config.neutral_codes)
    assert len(identity) == 8 and len(expression) == 8
    for offsets, decoder in ((identity, run.net.identity_decoder), (expression, run.net.expression_decoder)):
        basis = decoder.basis.weight.detach().double().numpy()  # (3V, K): the linear model of the training faces
        flat = offsets.reshape(len(offsets), -1)
        fit = basis @ np.linalg.lstsq(basis, flat.T, rcond=None)[0]
        assert np.linalg.norm(flat.T - fit) < 1e-4 * np.linalg.norm(flat)  # 8 faces, 12 directions: spanned exactly


def test_a_basis_run_keeps_its_pca_bases_unless_told_to_train_them(stores: tuple[str, str]) -> None:
    """Trained bases fit the training faces and lose held-out ones (docs/learning.md): by default the
    bases stay the PCA of the synthetic faces, while the layers that give their coefficients learn."""
    template = default_template()
    for trainable in (False, True):
        run = train_mod.build(small(*stores, decoder="basis", basis_size=12, basis_trainable=trainable), template)
        before = {k: v.clone() for k, v in run.net.state_dict().items()}
        for index, phase in enumerate(run.config.phases):
            run.epoch(index, phase, 0)
        after = run.net.state_dict()
        for name in ("identity_decoder.basis.weight", "expression_decoder.basis.weight"):
            assert torch.equal(before[name], after[name]) != trainable, (name, trainable)
        assert not torch.equal(before["identity_decoder.coefficients.0.weight"], after["identity_decoder.coefficients.0.weight"])
