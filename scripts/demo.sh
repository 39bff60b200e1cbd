#!/usr/bin/env bash
# Sets up (if needed) and runs the main job on the embedded example data:
# generate the example dataset, check the catalog entry, inspect one scan of every layout and
# preprocess it (landmarks, alignment to the template, crop, 29,495 points with normals), then
# ingest the whole dataset into a Zarr store with Dask and verify the store's content hashes, and
# make synthetic faces of the procedural model (ground-truth correspondence) with a preview,
# render four of them through a simulated structured-light depth camera, and train the tiny
# network on the synthetic faces and the example scans.
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
$fp synth --identities 30 --expressions 2 --out out/demo/synth.zarr --overwrite --preview "$out/synth.png"
$fp render-rgbd --in out/demo/synth.zarr --out out/demo/rgbd.zarr --preset phone --limit 4 --overwrite --preview "$out/rgbd.png"
rm -rf out/demo/run  # a fresh run each time (a run directory is never trained over)
$fp train --preset tiny --synth out/demo/synth.zarr --scans out/example/scans.zarr --out out/demo/run
echo "demo done: previews, reports and point clouds in $out/, stores in out/example/ and out/demo/, the run in out/demo/run/"
