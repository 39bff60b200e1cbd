#!/usr/bin/env bash
# The reference-model recipe of docs/learning.md, run as written on ICT-FaceKit, timed, plus a held-out
# ICT test store (noise, holes, missing sides) evaluated by the learned method and by NICP.
#   bash benchmarks/reference_recipe.sh ICT [WORKDIR]     (ICT: ict_facekit_face.npz or the FaceXModel/ folder)
set -euo pipefail
ict="$(realpath "$1")"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${2:-$repo/benchmarks/results/reference}"
fp="${FACEPIPE:-$repo/.venv/bin/facepipe}"
mkdir -p "$work" && cd "$work"
cp "$repo/data_catalog.yaml" .
times=times.txt; : > "$times"
step() { local name="$1"; shift; local t0=$(date +%s); "$@"; echo "$name $(( $(date +%s) - t0 ))" >> "$times"; }
[ -d data/example ] || $fp sample-data data/example > /dev/null
rm -rf run meshes report report-nicp test-learned test-nicp
step template  $fp template ict.npz --model ict --model-path "$ict"
step synth     $fp synth --model ict --model-path "$ict" --identities 300 --expressions 4 --out synth.zarr
step train     $fp train --preset reference --synth synth.zarr --out run
step ingest    $fp ingest example --template ict.npz --out s.zarr
step correspond $fp correspond --in s.zarr --checkpoint run --out meshes/
step evaluate  $fp evaluate --in s.zarr --checkpoint run --out report/
step evaluate-nicp $fp evaluate --in s.zarr --method nicp --template ict.npz --out report-nicp/
# held out: other identities (another seed), scanner-like damage
step synth-test $fp synth --model ict --model-path "$ict" --identities 8 --expressions 1 --seed 1 --noise-mm 0.2 --holes 2 \
    --missing-side 0.3 --out test.zarr
step test-learned $fp evaluate --in test.zarr --checkpoint run --out test-learned/
step test-network $fp evaluate --in test.zarr --checkpoint run --no-refine --out test-network/
step test-nicp $fp evaluate --in test.zarr --method nicp --template ict.npz --out test-nicp/
cat "$times"
