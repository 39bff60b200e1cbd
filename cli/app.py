"""The `facepipe` command: parses and validates arguments, calls the pipeline, reports errors plainly."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

import numpy as np

from facepipe.pipeline.errors import FacepipeError

if TYPE_CHECKING:
    from facepipe.pipeline.faces.template import Template
    from facepipe.schemas.store import RunOptions, RunReport

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Raw 3D face scans of many databases into one training set and dense correspondence.")
catalog_app = typer.Typer(no_args_is_help=True, help="The datasets named in data_catalog.yaml.")
app.add_typer(catalog_app, name="catalog")

_state = {"debug": False}

CatalogOpt = Annotated[Path, typer.Option("--catalog", help="catalog file", envvar="FACEPIPE_CATALOG")]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    _state["debug"] = debug


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="a scan file of any supported format")],
    fmt: Annotated[str | None, typer.Option("--format", help="reader to use instead of detecting one")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    png: Annotated[Path | None, typer.Option("--png", help="write a shaded preview here")] = None,
) -> None:
    """What a file is: format, mesh size, landmarks, units, bounding box."""
    from facepipe.pipeline.io.image import write_image
    from facepipe.pipeline.io.registry import read_scan
    from facepipe.pipeline.stages.inspect import describe, preview

    scan = read_scan(path, fmt)
    report = describe(scan)
    if png is not None:
        write_image(png, preview(scan))
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    lo, hi = report.bbox_min, report.bbox_max
    typer.echo(f"{report.path}\n  format     {report.format}\n  vertices   {report.vertices}\n  faces      {report.faces}")
    typer.echo(f"  landmarks  {report.landmarks}" + (f" ({report.landmark_source})" if report.landmark_source else ""))
    typer.echo(f"  units      {report.units}\n  bbox       [{lo[0]:.1f}, {lo[1]:.1f}, {lo[2]:.1f}] .. [{hi[0]:.1f}, {hi[1]:.1f}, {hi[2]:.1f}]")
    extras = [k for k, v in (("normals", report.normals), ("colours", report.colors)) if v]
    if report.uv:
        extras.append(f"uv {report.uv}")
    if report.texture_size:
        extras.append(f"texture {report.texture_size[0]}x{report.texture_size[1]}")
    if report.grid_shape:
        extras.append(f"grid {report.grid_shape[0]}x{report.grid_shape[1]}")
    typer.echo(f"  has        {', '.join(extras) or '-'}")
    meta = {k: v for k, v in report.meta.model_dump().items() if v and k not in ("format", "path", "units")}
    typer.echo(f"  meta       {json.dumps(meta)}")
    if png is not None:
        typer.echo(f"  preview    {png}")


@catalog_app.command("list")
def catalog_list(catalog: CatalogOpt = Path("data_catalog.yaml")) -> None:
    """Every dataset with its format, resolved root and whether that root exists."""
    from facepipe.pipeline.io.catalog import load_catalog, resolve_root

    cat = load_catalog(catalog)
    for name, entry in cat.datasets.items():
        root = resolve_root(name, entry, catalog.parent)
        state = "found" if root.is_dir() else "missing"
        typer.echo(f"{name:<10} {entry.format:<10} {state:<8} {root}")


@catalog_app.command("check")
def catalog_check(
    name: Annotated[str, typer.Argument(help="dataset name")],
    catalog: CatalogOpt = Path("data_catalog.yaml"),
    read: Annotated[bool, typer.Option("--read/--no-read", help="open every file (slow on large sets)")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Count the scans, report missing siblings and unreadable files; exit 1 if anything is wrong."""
    from facepipe.pipeline.io.catalog import check_dataset, get_entry, load_catalog

    report = check_dataset(name, get_entry(load_catalog(catalog), name), catalog.parent, read)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        typer.echo(f"{name}: root {report.root} ({'found' if report.root_exists else 'MISSING'})")
        typer.echo(f"  scans        {report.files}")
        if report.readable is not None:
            typer.echo(f"  readable     {report.readable}")
        for scan, missing in report.missing_siblings.items():
            typer.echo(f"  missing      {scan}: {', '.join(missing)}")
        for why in report.unreadable.values():
            typer.echo(f"  unreadable   {why}")
    if not report.ok:
        raise typer.Exit(1)


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Argument(help="folder to write the example dataset into")] = Path("data/example"),
    subjects: Annotated[int, typer.Option(min=1, max=100)] = 4,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write the embedded example dataset (synthetic faces in the BU-3DFE, Bosphorus and FRGC layouts)."""
    from facepipe.pipeline.io.sample_data import write_example_dataset

    paths = write_example_dataset(out, subjects, seed)
    typer.echo(f"wrote {len(paths)} files under {out}")


TemplateOpt = Annotated[Path | None, typer.Option(help="a saved template (.npz); default: the procedural model's")]
StoreTemplateOpt = Annotated[Path | None, typer.Option(
    "--template", help="a saved template (.npz) for NICP; default: the one the store was made in, else the procedural model's")]
IctOpt = Annotated[Path | None, typer.Option("--ict-model", help="derive the template from an ICT-FaceKit npz")]

SeedOpt = Annotated[int, typer.Option(help="global seed; each sample's own derives from it, the dataset and the sample id")]
WorkersOpt = Annotated[int, typer.Option(min=1, help="worker processes of the local Dask cluster")]
SchedulerOpt = Annotated[str | None, typer.Option(help="address of an existing Dask scheduler, e.g. tcp://host:8786")]
ThreadsOpt = Annotated[bool, typer.Option("--threads", help="threads instead of processes (memory:// stores use threads)")]
OverwriteOpt = Annotated[bool, typer.Option(help="start over in a store or result folder made with another plan")]
ReportOpt = Annotated[Path | None, typer.Option(help="write the summary here as JSON")]
RefineOpt = Annotated[bool, typer.Option(help="learned: fit each predicted face to its scan (codes, then a smooth per-vertex step)")]


def _template(template: Path | None, ict_model: Path | None = None) -> Template:
    from facepipe.pipeline.runtime.sources import resolve_template

    if template is not None and ict_model is not None:
        raise typer.BadParameter("give --template or --ict-model, not both")
    return resolve_template(template, ict_model)


def _options(workers: int, scheduler: str | None, threads: bool, overwrite: bool) -> RunOptions:
    from facepipe.schemas.store import RunOptions

    return RunOptions(workers=workers, scheduler=scheduler, processes=not threads, overwrite=overwrite)


@app.command()
def preprocess(
    path: Annotated[Path, typer.Argument(help="a scan file of any supported format")],
    template: TemplateOpt = None,
    ict_model: IctOpt = None,
    landmarks: Annotated[str, typer.Option(help="auto | annotations | mediapipe")] = "auto",
    points: Annotated[int, typer.Option(min=1, help="points to sample")] = 29_495,
    sampling: Annotated[str, typer.Option(help="area | vertices")] = "area",
    icp: Annotated[bool, typer.Option(help="refine the alignment by rigid ICP")] = False,
    seed: Annotated[int, typer.Option(help="global seed; the sample's own seed derives from it and the file name")] = 0,
    out: Annotated[Path | None, typer.Option(help="write the points with normals here (.ply)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the quality record as JSON")] = False,
) -> None:
    """Preprocess one scan: landmarks, alignment to the template, crop, resampling (exit 1 on a failure record)."""
    from facepipe.pipeline.runtime.seeding import sample_rng
    from facepipe.pipeline.stages.preprocess import Preprocessed, preprocess_file
    from facepipe.schemas.preprocess import PreprocessConfig

    try:
        config = PreprocessConfig(landmarks=landmarks, n_points=points, sampling=sampling, icp=icp)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    tpl = _template(template, ict_model)
    result = preprocess_file(path, tpl, config, sample_rng(seed, "cli", path.name))
    if not isinstance(result, Preprocessed):
        typer.echo(result.model_dump_json(indent=2) if as_json else f"{result.path}: failed at {result.stage}: {result.reason}")
        raise typer.Exit(1)
    if out is not None:
        from facepipe.pipeline.io.generic import write_point_cloud

        write_point_cloud(out, result.points, result.normals)
    q = result.quality
    if as_json:
        typer.echo(json.dumps({"template": tpl.id, "to_template": result.to_template.tolist(), "quality": q.model_dump()}, indent=2))
        return
    typer.echo(f"{path}\n  template   {tpl.name} ({tpl.id})\n  landmarks  {q.landmark_source} "
               f"(confidence {q.landmark_confidence:.2f}{', view ' + q.landmark_view if q.landmark_view else ''}), "
               f"residual {q.landmark_residual_mm:.2f} mm")
    typer.echo(f"  crop       {q.vertices_before_crop} -> {q.vertices_after_crop} vertices, {q.subdivision_levels} subdivision levels")
    typer.echo(f"  points     {len(result.points)}" + (f" -> {out}" if out else ""))
    typer.echo("  seconds    " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in q.seconds.items()))


@app.command()
def ingest(
    name: Annotated[str, typer.Argument(help="dataset name in the catalog")],
    catalog: CatalogOpt = Path("data_catalog.yaml"),
    out: Annotated[str | None, typer.Option(help="store path or fsspec URL (file://, s3://, memory://); "
                                                 "default out/NAME/scans.zarr")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="only the first N scans (in sorted order)")] = None,
    workers: WorkersOpt = 2,
    scheduler: SchedulerOpt = None,
    seed: SeedOpt = 0,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON preprocessing settings (see schemas/preprocess.py)")] = None,
    template: TemplateOpt = None,
    ict_model: IctOpt = None,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = False,
    report: ReportOpt = None,
) -> None:
    """Preprocess every scan of a dataset into a Zarr store with Dask; a rerun resumes what is not done."""
    from facepipe.pipeline.stages.ingest import run_ingest

    overrides = _read_config(config) if config else None
    url = out or f"out/{name}/scans.zarr"
    progress = _Progress(url, name)
    try:
        result = run_ingest(name, catalog, url, _template(template, ict_model), seed=seed, limit=limit, overrides=overrides,
                            options=_options(workers, scheduler, threads, overwrite), on_start=progress.start,
                            on_sample=progress.sample)
    finally:
        progress.stop()
    _finish(result, report)


class _Progress:
    """A rich progress bar on stderr with samples/s, failures and ETA, fed by the job callbacks."""

    def __init__(self, url: str, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.url, self.label, self.failed, self.task = url, label, 0, None
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]} samples/s  {task.fields[failed]} failed"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True))

    def start(self, todo: int, done_before: int, dashboard: str | None) -> None:
        if done_before:
            typer.echo(f"resuming {self.url}: {done_before} samples already ok, {todo} to do", err=True)
        if dashboard:
            typer.echo(f"Dask dashboard: {dashboard}", err=True)
        if todo:
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=todo, rate="-", failed=0)

    def sample(self, outcome: object) -> None:
        if getattr(outcome, "status", "failed") != "ok":
            self.failed += 1
        self.bar.advance(self.task)  # type: ignore[arg-type]
        speed = self.bar.tasks[0].speed
        self.bar.update(self.task, rate=f"{speed:.1f}" if speed else "-", failed=self.failed)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.task is not None:
            self.bar.stop()


def _finish(result: RunReport, report: Path | None) -> None:
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    _print_summary(result)
    if result.not_written:
        typer.echo(f"{result.not_written} samples could not be written (see above); rerun the same command to resume", err=True)
        raise typer.Exit(1)


@app.command()
def synth(
    model: Annotated[str, typer.Option(help="procedural (built in), or ict | bfm2009 | flame with --model-path")] = "procedural",
    model_path: Annotated[Path | None, typer.Option("--model-path", help="the model file, e.g. ict_facekit_face.npz")] = None,
    identities: Annotated[int, typer.Option(min=1, help="random identities")] = 10,
    expressions: Annotated[int, typer.Option(min=0, help="random expressions per identity, besides its neutral face")] = 6,
    out: Annotated[str | None, typer.Option(help="store path or fsspec URL; default out/synth-MODEL/synth.zarr")] = None,
    points: Annotated[int, typer.Option(min=1, help="points sampled per face")] = 29_495,
    noise_mm: Annotated[float, typer.Option(min=0, help="scanner-like noise along the normal (mm)")] = 0.0,
    holes: Annotated[int, typer.Option(min=0, help="holes cut into each face")] = 0,
    missing_side: Annotated[float, typer.Option(min=0, max=1, help="probability of cutting away one side")] = 0.0,
    identity_components: Annotated[int | None, typer.Option(min=1, help="use only the first K identity modes")] = None,
    template_vertices: Annotated[int | None, typer.Option(min=1, help="refine the template (and ground truth) by Loop "
                                                                     "subdivision to at least N vertices")] = None,
    seed: SeedOpt = 0,
    workers: WorkersOpt = 2,
    scheduler: SchedulerOpt = None,
    threads: ThreadsOpt = False,
    overwrite: OverwriteOpt = False,
    report: ReportOpt = None,
    preview: Annotated[Path | None, typer.Option(help="write a PNG grid of the first 16 faces here")] = None,
) -> None:
    """Synthetic faces of a morphable model with ground-truth correspondence, into a store like ingest's."""
    from pydantic import ValidationError

    from facepipe.pipeline.stages.synth import synth_from_model, write_preview

    settings = {"identities": identities, "expressions": expressions, "n_points": points, "noise_mm": noise_mm, "holes": holes,
                "missing_side": missing_side, "identity_components": identity_components,
                "template_vertices": template_vertices}
    url = out or f"out/synth-{model}/synth.zarr"
    progress = _Progress(url, f"synth-{model}")
    try:
        result = synth_from_model(model, model_path, url, settings, seed=seed,
                                  options=_options(workers, scheduler, threads, overwrite), on_start=progress.start,
                                  on_sample=progress.sample)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    finally:
        progress.stop()
    _finish(result, report)
    if preview is not None:
        typer.echo(f"  preview    {write_preview(url, preview)}")


@app.command("render-rgbd")
def render_rgbd(
    source: Annotated[str, typer.Option("--in", help="a synth store (path or URL) or a catalog dataset name")],
    out: Annotated[str, typer.Option(help="store path or fsspec URL for rgbd.zarr")],
    preset: Annotated[str, typer.Option(help="sensor preset: phone | kinect | tiny")] = "phone",
    views: Annotated[int, typer.Option(min=1, help="random head poses per source face")] = 1,
    catalog: CatalogOpt = Path("data_catalog.yaml"),
    limit: Annotated[int | None, typer.Option(min=1, help="only the first N source faces")] = None,
    yaw: Annotated[float, typer.Option(min=0, help="yaw drawn from +-this many degrees")] = 30.0,
    pitch: Annotated[float, typer.Option(min=0)] = 15.0,
    roll: Annotated[float, typer.Option(min=0)] = 10.0,
    seed: SeedOpt = 0,
    workers: WorkersOpt = 2,
    scheduler: SchedulerOpt = None,
    threads: ThreadsOpt = False,
    overwrite: OverwriteOpt = False,
    report: ReportOpt = None,
    preview: Annotated[Path | None, typer.Option(help="contact sheet PNG: RGB, true depth, sensor depth, difference")] = None,
) -> None:
    """Faces through a simulated structured-light depth camera: RGB, depth with the sensor's artefacts, XYZ."""
    from facepipe.pipeline.io.image import write_image
    from facepipe.pipeline.runtime.sources import resolve_source
    from facepipe.pipeline.stages.rgbd import contact_sheet, run_render_rgbd
    from facepipe.schemas.rgbd import PRESETS, RenderConfig

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r} (have: {', '.join(PRESETS)})")
    config = RenderConfig(preset=PRESETS[preset], views=views, yaw_deg=(-yaw, yaw), pitch_deg=(-pitch, pitch),
                          roll_deg=(-roll, roll))
    src = resolve_source(source, catalog, limit)
    progress = _Progress(out, f"rgbd-{src.name}")
    try:
        result = run_render_rgbd(src, out, config, seed=seed, options=_options(workers, scheduler, threads, overwrite),
                                 on_start=progress.start, on_sample=progress.sample)
    finally:
        progress.stop()
    _finish(result, report)
    if preview is not None:
        preview.parent.mkdir(parents=True, exist_ok=True)
        write_image(preview, contact_sheet(out))
        typer.echo(f"  preview    {preview}")


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="run directory: config.json, metrics.jsonl, checkpoints/, PNGs, model.pt")],
    config: Annotated[Path | None, typer.Option(help="YAML/JSON training settings (schemas/train.py)")] = None,
    preset: Annotated[str | None, typer.Option(help="tiny (minutes on 2 CPU cores), reference (under 30 min on 2 CPU cores), full (paper 1's sizes, GPU)")] = None,
    synth: Annotated[list[str] | None, typer.Option(help="synth store(s) with ground truth (repeatable)")] = None,
    scans: Annotated[list[str] | None, typer.Option(help="scans store(s), trained without ground truth (repeatable)")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
) -> None:
    """Train the PointNet encoder and the identity and expression decoders (paper 1's three phases)."""
    from facepipe.models.train import train as run_training
    from facepipe.schemas.train import train_config

    values = _read_config(config) if config else {}
    values |= {k: v for k, v in (("synth", synth), ("scans", scans)) if v}
    try:
        cfg = train_config(values, preset)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    history = run_training(cfg, out, resume=resume, log=typer.echo)
    if history and os.environ.get("RANK", "0") == "0":  # under torchrun, one summary
        first, last = history[0], history[-1]
        typer.echo(f"{out}\n  epochs     {len(history)}\n  loss       {first['loss']:.5f} -> {last['loss']:.5f}\n"
                   f"  outputs    metrics.jsonl, losses.png, predictions.png, model.pt, checkpoints/")


@app.command("train-encoder")
def train_encoder(
    checkpoint: Annotated[Path, typer.Option(help="the `facepipe train` run whose decoders (frozen) the encoder regresses codes for")],
    out: Annotated[Path, typer.Option(help="run directory: config.json, metrics.jsonl, checkpoints/, PNGs, model.pt")],
    rgbd: Annotated[list[str] | None, typer.Option(help="rgbd store(s) from render-rgbd (repeatable)")] = None,
    modality: Annotated[list[str] | None, typer.Option(help="rgbd | depth | rgb (repeatable: branches trained together)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON settings (schemas/encoder.py)")] = None,
    preset: Annotated[str | None, typer.Option(help="tiny (a minute on 2 CPU cores), reference (2 CPU cores, 160x120), full (ResNet-50, GPU)")] = None,
    no_cross_domain: Annotated[bool, typer.Option("--no-cross-domain", help="leave out paper 2's cross-domain term")] = False,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
) -> None:
    """Train RGB-D / depth / RGB encoders that regress a trained run's codes and the pose (paper 2)."""
    from facepipe.models.train_encoder import train_encoder as run_training
    from facepipe.schemas.encoder import encoder_config

    values = _read_config(config) if config else {}
    values |= {"checkpoint": str(checkpoint)} | {k: v for k, v in (("rgbd", rgbd), ("modalities", modality)) if v}
    if no_cross_domain:
        values["cross_domain"] = False
    try:
        cfg = encoder_config(values, preset)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    history = run_training(cfg, out, resume=resume, log=typer.echo)
    if history and os.environ.get("RANK", "0") == "0":
        first, last = history[0], history[-1]
        errors = ", ".join(f"{k[:-7]} {last[k] / cfg.weights.vertex:.2f} mm" for k in last if k.endswith("_vertex") and cfg.weights.vertex)
        typer.echo(f"{out}\n  epochs     {len(history)}\n  loss       {first['loss']:.4f} -> {last['loss']:.4f}"
                   + (f"\n  vertices   {errors} (last epoch, training frames, camera space)" if errors else "")
                   + _correction_line(out / "denoiser.jsonl")
                   + "\n  outputs    metrics.jsonl, losses.png, predictions.png, model.pt, checkpoints/")


def _correction_line(path: Path) -> str:
    """The sensor's depth correction as train-encoder learnt it: its L1 over the first and last steps."""
    if not path.exists():
        return ""
    losses = [json.loads(line)["l1_mm"] for line in path.read_text().splitlines()]
    start, end = np.mean(losses[:20]), np.mean(losses[-max(len(losses) // 10, 1):])
    return f"\n  depth      the sensor's correction learnt: L1 {start:.2f} -> {end:.2f} mm (training crops), denoiser.jsonl"


@app.command()
def reconstruct(
    checkpoint: Annotated[Path, typer.Option(help="a train-encoder run directory or its model.pt")],
    inputs: Annotated[list[str], typer.Option("--in", help="an rgbd store, or capture files: depth .png (mm) / .npy (m), or RGB images for --modality rgb (repeatable)")],
    out: Annotated[Path, typer.Option(help="folder for the meshes (camera space, mm) and index.csv")],
    modality: Annotated[str | None, typer.Option(help="the branch: rgbd | depth | rgb (default: the run's first)")] = None,
    intrinsics: Annotated[Path | None, typer.Option(help="intrinsics JSON for every file (default: <stem>.json beside each; RGB images without one: a 60-degree view)")] = None,
    clean: Annotated[bool, typer.Option("--clean", help="store frames: read the true depth instead of the sensor's")] = False,
    fmt: Annotated[str, typer.Option("--format", help="ply | obj")] = "ply",
    batch: Annotated[int, typer.Option(min=1, help="frames per network call")] = 16,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    refine: Annotated[bool, typer.Option(help="fit each face to its frame after the encoder: to the depth (codes and pose, then the refinement), or for RGB to MediaPipe's landmarks and the shading")] = True,
    denoise: Annotated[bool, typer.Option(help="the fit to the depth reads the sensor's depth through the encoder run's learnt correction (where it has one)")] = True,
    overwrite: OverwriteOpt = False,
) -> None:
    """Faces from RGB-D, depth or RGB: one mesh per frame in template topology, in camera space."""
    from facepipe.models.reconstruct import EncoderPredictor, reconstruct as run_reconstruct
    from facepipe.pipeline.io.frame_files import frame_files
    from facepipe.schemas.encoder import FitConfig

    predictor = EncoderPredictor.load(checkpoint, device)
    branch = predictor.modality(modality)
    is_store = len(inputs) == 1 and (Path(inputs[0]).is_dir() or "://" in inputs[0])  # a frame is a file
    source: str | list = inputs[0] if is_store else frame_files([Path(i) for i in inputs], branch == "rgb", intrinsics)
    rows = run_reconstruct(source, predictor, out, branch, clean, fmt, batch, overwrite, FitConfig(denoise=denoise) if refine else None)
    done = [r for r in rows if r["output"]]
    residuals = [float(r["residual_mm"]) for r in done if r["residual_mm"] != ""]  # type: ignore[arg-type]
    typer.echo(f"{out}\n  meshes     {len(done)} ({branch}, {len(predictor.face.template.vertices)} vertices each, camera space, mm), index.csv"
               + (f"\n  residual   {np.mean(residuals):.2f} mm (depth points to mesh)" if residuals else ""))
    for r in rows:
        if r.get("error"):
            typer.echo(f"  failed     {r['error']}")


@app.command()
def correspond(
    inputs: Annotated[list[str], typer.Option("--in", help="a scans/synth store, a catalog dataset name, or scan files (repeatable)")],
    out: Annotated[Path, typer.Option(help="folder for the meshes and index.csv")],
    checkpoint: Annotated[Path | None, typer.Option(help="run directory (model.pt) or checkpoint file; needed for learned")] = None,
    method: Annotated[str, typer.Option(help="learned | nicp")] = "learned",
    fmt: Annotated[str, typer.Option("--format", help="ply | obj")] = "ply",
    batch: Annotated[int, typer.Option(min=1, help="scans per network call")] = 8,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    colour: Annotated[bool, typer.Option("--colour", help="colour vertices by their distance to the scan (0-5 mm)")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="only the first N scans")] = None,
    catalog: CatalogOpt = Path("data_catalog.yaml"),
    template: StoreTemplateOpt = None,
    refine: RefineOpt = True,
    workers: WorkersOpt = 2,
    scheduler: SchedulerOpt = None,
    threads: ThreadsOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Dense correspondence: one mesh per scan in template topology, in the scan's frame and units.
    NICP and refinement run one Dask task per scan; a rerun resumes the folder."""
    from facepipe.models.correspond import Predictor, choose_template, correspond as run_correspond
    from facepipe.models.refine import RefineConfig
    from facepipe.pipeline.runtime.sources import resolve_source

    if method not in ("learned", "nicp"):
        raise typer.BadParameter(f"unknown method {method!r} (learned or nicp)")
    predictor = Predictor.load(checkpoint, device) if checkpoint else None
    if method == "learned" and predictor is None:
        raise typer.BadParameter("the learned method needs --checkpoint (a run directory or model file)")
    source = resolve_source(inputs, catalog, limit)
    tpl = choose_template(predictor, _template(template) if template else None, source)
    progress = _Progress(str(out), "correspond")
    try:
        rows = run_correspond(source, tpl, out, method, predictor, fmt, batch, colour, RefineConfig() if refine else None,
                              _options(workers, scheduler, threads, overwrite), on_start=progress.start,
                              on_sample=progress.sample)
    finally:
        progress.stop()
    done = [r for r in rows if r["output"]]
    timed = [float(r["seconds"]) for r in done if "seconds" in r]  # type: ignore[arg-type]
    typer.echo(f"{out}\n  meshes     {len(done)} ({done[0]['method'] if done else method}, {len(tpl.vertices)} vertices each), "
               f"index.csv" + (f" ({len(done) - len(timed)} were done before)" if len(timed) < len(done) else ""))
    if done:
        typer.echo("  per scan   " + (f"{np.mean(timed) * 1e3:.1f} ms, " if timed else "") + "residual "
                   f"{np.mean([float(r['residual_mm']) for r in done]):.2f} mm")
    for r in rows:
        if r.get("error"):
            typer.echo(f"  failed     {r['error']}")


@app.command()
def evaluate(
    store: Annotated[str, typer.Option("--in", help="a synth store (dense ground truth) or a scans store")],
    out: Annotated[Path, typer.Option(help="folder for report.json, samples.csv and the plots")],
    checkpoint: Annotated[Path | None, typer.Option(help="run directory or checkpoint; omit with --method nicp")] = None,
    method: Annotated[str, typer.Option(help="learned | nicp")] = "learned",
    limit: Annotated[int | None, typer.Option(min=1, help="only the first N samples")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    catalog: CatalogOpt = Path("data_catalog.yaml"),
    template: StoreTemplateOpt = None,
    refine: RefineOpt = True,
    denoise: Annotated[bool, typer.Option(help="rgbd stores: the fit to the depth reads the sensor's depth through the encoder run's learnt correction (where it has one)")] = True,
    workers: WorkersOpt = 2,
    scheduler: SchedulerOpt = None,
    threads: ThreadsOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Errors in mm: dense vertex error and NME (synth), the five landmarks, BU-3DFE regions (raw .bnd files).
    The faces go to OUT/meshes/ (as correspond writes them; a rerun resumes)."""
    from facepipe.models.correspond import Predictor, choose_template
    from facepipe.models.evaluate import evaluate as run_evaluate
    from facepipe.models.refine import RefineConfig
    from facepipe.pipeline.runtime.sources import store_source

    if store_source(store).store_kind == "rgbd":
        if checkpoint is None:
            raise typer.BadParameter("an rgbd store is evaluated with --checkpoint: a train-encoder run")
        _evaluate_frames(store, checkpoint, out, limit, device, refine, denoise)
        return
    if method not in ("learned", "nicp"):
        raise typer.BadParameter(f"unknown method {method!r} (learned or nicp)")
    if method == "learned" and checkpoint is None:
        raise typer.BadParameter("the learned method needs --checkpoint")
    predictor = Predictor.load(checkpoint, device) if method == "learned" and checkpoint else None
    progress = _Progress(str(out), "evaluate")
    try:
        given = _template(template) if template else None
        summary = run_evaluate(store, choose_template(predictor, given) if predictor else given, predictor, out,
                               catalog, limit, RefineConfig() if refine and predictor else None,
                               _options(workers, scheduler, threads, overwrite), on_start=progress.start,
                               on_sample=progress.sample)
    finally:
        progress.stop()
    typer.echo(f"{store} ({summary['method']}, {summary['samples']} samples) -> {out}")
    for key, label in (("vertex_mm", "vertex error"), ("nme", "NME"), ("five_mm", "5 landmarks")):
        if key in summary:
            s = summary[key]
            unit = "" if key == "nme" else " mm"
            typer.echo(f"  {label:<13} {s['mean']:.4f} +- {s['std']:.4f}{unit} (median {s['median']:.4f}, max {s['max']:.4f})")  # type: ignore[index]
    for region, r in summary.get("bu3dfe_regions_mm", {}).items():  # type: ignore[union-attr]
        typer.echo(f"  BU-3DFE {region:<15} {r['mean']:.2f} +- {r['std']:.2f} mm ({r['landmarks']} landmarks)")
    if "bu3dfe_mean_over_regions_mm" in summary:
        typer.echo(f"  BU-3DFE mean over regions {summary['bu3dfe_mean_over_regions_mm']:.2f} mm")
    if "bosphorus22_mean_mm" in summary:
        typer.echo(f"  Bosphorus 22 landmarks {summary['bosphorus22_mean_mm']:.2f} mm")


def _evaluate_frames(store: str, checkpoint: Path, out: Path, limit: int | None, device: str, refine: bool, denoise: bool) -> None:
    from facepipe.models.evaluate_frames import evaluate_frames
    from facepipe.models.reconstruct import EncoderPredictor
    from facepipe.schemas.encoder import FitConfig

    summary = evaluate_frames(store, EncoderPredictor.load(checkpoint, device), out, limit,
                              fit=FitConfig(denoise=denoise) if refine else None)
    typer.echo(f"{store} (encoder {summary['encoder']}, {'fitted to the frames' if refine else 'encoder alone'}) -> {out}")
    typer.echo(f"  {'branch/input':<16} {'frames':>6} {'camera mm':>10} {'pose-fitted mm':>15} {'+ scale mm':>11} {'ms/frame':>9}")
    for key, r in summary["branches"].items():  # type: ignore[union-attr]
        typer.echo(f"  {key:<16} {r['frames']:>6} {r['vertex_mm']['mean']:>10.2f} {r['vertex_mm_pose_fitted']['mean']:>15.2f} "
                   f"{r['vertex_mm_similarity_fitted']['mean']:>11.2f} {r['ms_per_frame']:>9.1f}")
    typer.echo(f"  the decoders' own closest faces: {summary['decoders_best_fit_mm']['mean']:.2f} mm (no encoder of them does better)")  # type: ignore[index]


@app.command()
def template(
    out: Annotated[Path, typer.Argument(help="where to save the template (.npz)")],
    model: Annotated[str, typer.Option(help="procedural (built in), or ict | bfm2009 | flame with --model-path")] = "procedural",
    model_path: Annotated[Path | None, typer.Option("--model-path", help="the model file or folder")] = None,
    target_vertices: Annotated[int | None, typer.Option(min=1, help="Loop-subdivide to at least N vertices")] = None,
) -> None:
    """Derive a template from a model and save it: face region, [-1, 1] frame, five landmarks, regions, id."""
    from facepipe.pipeline.faces.template import template_from_model
    from facepipe.pipeline.io.face_models import load_model

    t = template_from_model(load_model(model, model_path), target_vertices=target_vertices)
    out.parent.mkdir(parents=True, exist_ok=True)
    t.save(out)
    regions = ", ".join(f"{k} {len(v)}" for k, v in t.regions.items()) or "-"
    typer.echo(f"{out}\n  template   {t.name} ({t.id})\n  vertices   {len(t.vertices)}\n  triangles  {len(t.triangles)}\n"
               f"  edges      {len(t.edges())}\n  unit       {t.unit_mm:.2f} mm\n  regions    {regions}")


def _read_config(path: Path) -> dict[str, object]:
    from facepipe.pipeline.io.settings import read_settings

    return read_settings(path)


def _print_summary(r: RunReport) -> None:
    s = r.store_status
    typer.echo(f"{r.dataset} -> {r.store}\n  samples    {r.samples} (ok {s['ok']}, failed {s['failed']}, pending {s['pending']})")
    typer.echo(f"  this run   {r.processed} processed: {r.ok} ok, {r.failed} failed, {r.not_written} not written"
               + (f" ({r.done_before} were done before)" if r.done_before else ""))
    if r.processed:
        typer.echo(f"  speed      {r.scans_per_second:.1f} samples/s on {r.workers} workers ({r.scheduler}; first task to last "
                   f"result, worker start-up included), {r.wall_seconds:.1f} s in all")
        typer.echo("  per sample " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in r.stage_seconds_mean.items()))
    for stage, count in r.failures_by_stage.items():
        typer.echo(f"  failed     {count:>4} at {stage}")
    for f in r.failures[:20]:
        typer.echo(f"    {f.path}: [{f.stage}] {f.reason}")
    if len(r.failures) > 20:
        typer.echo(f"    ... {len(r.failures) - 20} more (--report FILE.json lists them all)")
    typer.echo(f"  manifest   {r.manifest_digest}")


@app.command()
def verify(
    store: Annotated[str, typer.Argument(help="store path or fsspec URL")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recompute a store's content hashes and check them against its manifest (exit 1 on a mismatch)."""
    from facepipe.pipeline.runtime.store import verify_store

    result = verify_store(store)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(f"{store}: {'OK' if result.ok else 'MISMATCH'}  manifest {result.expected or '-'}")
        for p in result.problems:
            typer.echo(f"  {p}")
    if not result.ok:
        raise typer.Exit(1)


# what to pass for each `FacepipeError.remedy`: the library names the remedy, the CLI the flag
REMEDIES = {
    "overwrite": "use --overwrite to start it over, or --out for a new store",
    "new_output": "choose another --out",
    "resume": "use --resume to continue it, or another --out",
    "model_path": "pass the file with --model-path",
    "no_model_path": "leave out --model-path",
    "checkpoint": "pass --checkpoint (a run directory or model file)",
    "template": "pass the template it was made in with --template",
}


def main() -> None:
    """Console entry point: FacepipeErrors become one line on stderr and exit code 2; anything else
    (a bug) one line and exit 1, the traceback only with --debug."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints as escapes, never raises
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        app()  # standalone: Typer handles usage errors, --help and exit codes
    except FacepipeError as exc:
        if _state["debug"]:
            raise
        hint = REMEDIES.get(exc.remedy or "")
        typer.echo(f"error: {exc}" + (f"\n{hint}" if hint else ""), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: what was written is kept; the same command resumes", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for a user
        if _state["debug"] or os.environ.get("FACEPIPE_DEBUG"):
            raise
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1]
        typer.echo(f"internal error: {type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno}); "
                   "rerun with --debug for the traceback and please report it", err=True)
        sys.exit(1)


if __name__ == "__main__":  # torchrun -m facepipe.cli.app ...
    main()
