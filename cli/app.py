"""The `facepipe` command: parses and validates arguments, calls the pipeline, reports errors plainly."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from facepipe.pipeline.errors import FacepipeError

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
    from facepipe.pipeline.inspect import describe, preview
    from facepipe.pipeline.io.image import write_image
    from facepipe.pipeline.io.registry import read_scan

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
    from facepipe.pipeline.catalog import load_catalog, resolve_root

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
    from facepipe.pipeline.catalog import check_dataset, get_entry, load_catalog

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
    from facepipe.pipeline.sample_data import write_example_dataset

    paths = write_example_dataset(out, subjects, seed)
    typer.echo(f"wrote {len(paths)} files under {out}")


@app.command()
def preprocess(
    path: Annotated[Path, typer.Argument(help="a scan file of any supported format")],
    template: Annotated[Path | None, typer.Option(help="a saved template (.npz); default: the example data's")] = None,
    ict_model: Annotated[Path | None, typer.Option("--ict-model", help="derive the template from an ICT-FaceKit npz")] = None,
    landmarks: Annotated[str, typer.Option(help="auto | annotations | mediapipe")] = "auto",
    points: Annotated[int, typer.Option(min=1, help="points to sample")] = 29_495,
    sampling: Annotated[str, typer.Option(help="area | vertices")] = "area",
    icp: Annotated[bool, typer.Option(help="refine the alignment by rigid ICP")] = False,
    seed: Annotated[int, typer.Option(help="global seed; the sample's own seed derives from it and the file name")] = 0,
    out: Annotated[Path | None, typer.Option(help="write the points with normals here (.ply)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the quality record as JSON")] = False,
) -> None:
    """Preprocess one scan: landmarks, alignment to the template, crop, resampling (exit 1 on a failure record)."""
    import numpy as np

    from facepipe.pipeline.morphable import load_ict_npz
    from facepipe.pipeline.preprocess import Preprocessed, preprocess_file
    from facepipe.pipeline.sample_data import example_template
    from facepipe.pipeline.seeding import sample_rng
    from facepipe.pipeline.template import load_template, template_from_model
    from facepipe.schemas.preprocess import PreprocessConfig

    try:
        config = PreprocessConfig(landmarks=landmarks, n_points=points, sampling=sampling, icp=icp)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if template is not None and ict_model is not None:
        raise typer.BadParameter("give --template or --ict-model, not both")
    tpl = (load_template(template) if template else template_from_model(load_ict_npz(ict_model)) if ict_model
           else example_template())
    result = preprocess_file(path, tpl, config, sample_rng(seed, "cli", path.name))
    if not isinstance(result, Preprocessed):
        typer.echo(result.model_dump_json(indent=2) if as_json else f"failed at {result.stage}: {result.reason}")
        raise typer.Exit(1)
    if out is not None:
        import open3d as o3d

        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(result.points.astype(np.float64)))
        cloud.normals = o3d.utility.Vector3dVector(result.normals.astype(np.float64))
        out.parent.mkdir(parents=True, exist_ok=True)
        if not o3d.io.write_point_cloud(str(out), cloud):
            raise FacepipeError(f"{out}: could not write the point cloud")
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


def main() -> None:
    """Console entry point: FacepipeErrors become one line on stderr and exit code 2."""
    try:
        app()  # standalone: Typer handles usage errors, --help and exit codes
    except FacepipeError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
