#!/usr/bin/env bash
# Extract the ORL faces with the shared MobileFaceNet, inject label flips, clean, evaluate.
# Run from the repository root with the shared folder beside it (../shared).
set -euo pipefail
out=${1:-orl-example}
mkdir -p "$out"
faceclean extract ../shared/data/orl_faces -m ../shared/models/mobilefacenet-foamliu.onnx \
  --preset imagenet --fit pad -o "$out/orl.parquet" --overwrite
faceclean inject-noise "$out/orl.parquet" -o "$out/noisy.parquet" --flip 0.1 --outlier 0.05 --split 0.05
faceclean clean "$out/noisy.parquet" -o "$out/cleaned"
faceclean evaluate-cleaning "$out/cleaned" --truth "$out/noisy.truth.parquet" --sweep
