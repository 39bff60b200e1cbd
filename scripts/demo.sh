#!/usr/bin/env bash
# Sets up (if needed) and runs the whole pipeline on the embedded example data:
# make the example dataset (faces of the procedural model in the BU-3DFE, Bosphorus and FRGC
# layouts), check its catalog entry, inspect and preprocess one scan of each layout, ingest the
# dataset into a Zarr store with Dask and verify it, synthesise faces with ground-truth
# correspondence, render some through a simulated structured-light camera, train the tiny
# network, export every example scan as a mesh in template topology (learned and NICP), and
# evaluate both.
#
# FACEPIPE_DEMO_DIR=DIR writes everything under DIR instead of the repository (the tests do);
# FACEPIPE=PATH uses that facepipe instead of setting up .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FACEPIPE:-}" ]; then
  bash scripts/setup.sh
  fp="$PWD/.venv/bin/facepipe"
else
  fp="$FACEPIPE"
fi
work="${FACEPIPE_DEMO_DIR:-$PWD}"
mkdir -p "$work"
[ "$work" -ef "$PWD" ] || cp data_catalog.yaml "$work/"
cd "$work"
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
rm -rf out/demo/run out/demo/meshes out/demo/meshes-nicp  # a fresh run each time (a run directory is never trained over)
$fp train --preset tiny --synth out/demo/synth.zarr --scans out/example/scans.zarr --out out/demo/run
$fp correspond --checkpoint out/demo/run --in out/example/scans.zarr --out out/demo/meshes --colour
$fp correspond --method nicp --in out/example/scans.zarr --out out/demo/meshes-nicp --limit 4
$fp evaluate --checkpoint out/demo/run --in out/example/scans.zarr --out out/demo/eval
$fp evaluate --checkpoint out/demo/run --in out/demo/synth.zarr --out out/demo/eval-synth --limit 30
# faces from depth: 24 of the synthetic faces through the small depth camera, a tiny depth encoder for
# the decoders just trained, the frames' meshes in camera space, and the error of 8 of them (each is
# fitted twice there, to the sensor's and to the true depth, about a second a fit)
rm -rf out/demo/encoder out/demo/reconstructed
$fp render-rgbd --in out/demo/synth.zarr --out out/demo/rgbd-tiny.zarr --preset tiny --limit 24 --overwrite
$fp train-encoder --checkpoint out/demo/run --rgbd out/demo/rgbd-tiny.zarr --preset tiny --out out/demo/encoder
$fp reconstruct --checkpoint out/demo/encoder --in out/demo/rgbd-tiny.zarr --out out/demo/reconstructed
$fp evaluate --checkpoint out/demo/encoder --in out/demo/rgbd-tiny.zarr --out out/demo/eval-rgbd --limit 8
echo
echo "demo done, in $work:"
echo "  meshes   out/demo/meshes/ (one .ply per example scan, template topology, index.csv), out/demo/meshes-nicp/"
echo "  reports  out/demo/eval/report.json (BU-3DFE regions), out/demo/eval-synth/report.json (dense error)"
echo "  depth    out/demo/reconstructed/ (meshes from depth frames, camera space), out/demo/eval-rgbd/report.json"
echo "  also     out/demo/encoder/ (predictions.png), out/demo/run/ (losses.png, predictions.png), out/demo/*.png previews, stores in out/example/ and out/demo/"
