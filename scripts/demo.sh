#!/usr/bin/env bash
# Sets up (if needed) and runs the main job on the embedded example data:
# generate the example dataset, check the catalog entry, inspect one scan of every layout and
# preprocess it (landmarks, alignment to the template, crop, 29,495 points with normals), then
# ingest the whole dataset into a Zarr store with Dask and verify the store's content hashes, and
# make synthetic faces of the procedural model (ground-truth correspondence) with a preview, and
# render four of them through a simulated structured-light depth camera.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
fp=.venv/bin/facepipe
out=out/demo
mkdir -p "$out"
$fp sample-data data/example
$fp catalog check example
for f in data/example/BU-3DFE/F0001/F0001_HA04WH_F3D.wrl \
         data/example/Bosphorus/bs000/bs000_E_HAPPY_0.bnt \
         data/example/FRGC/nd1/Spring2003range/04200d100.abs; do
  name=$(basename "$f")
  $fp inspect "$f" --png "$out/${name%%.*}.png"
  $fp inspect "$f" --json > "$out/${name%%.*}.json"
  $fp preprocess "$f" --out "$out/${name%%.*}_points.ply"
done
$fp ingest example --report "$out/ingest.json"   # a rerun resumes: nothing left to do
$fp verify out/example/scans.zarr
$fp synth --identities 4 --expressions 2 --out out/demo/synth.zarr --preview "$out/synth.png"
$fp render-rgbd --in out/demo/synth.zarr --out out/demo/rgbd.zarr --preset phone --limit 4 --preview "$out/rgbd.png"
echo "demo done: previews, reports and preprocessed point clouds in $out/, the store in out/example/scans.zarr"
