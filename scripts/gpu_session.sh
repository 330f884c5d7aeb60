#!/usr/bin/env bash
# The prepared GPU session: on a lent CUDA machine, train the bundled denoisers at scale and
# measure CUDA inference, in about 8 minutes. Run from the repository root:
#   OUT=/some/folder MINUTES=5.5 bash scripts/gpu_session.sh
# Writes to $OUT: stem-denoise.safetensors, hrtem-denoise.safetensors (the new bundled
# candidates, each with its command, seed and validation curve in its header), a STEM arm
# with half of its images at 0.5-10 e/px (lowdose/stem-denoise.safetensors), one log per
# run and cuda.json. The STEM arms train with the detector's decay on 90 % of the images,
# as the shipped weights did (without it the recorded-target networks draw the real TIA
# frames' smeared noise as texture); the HRTEM arm draws half of its images at 0.5-10 e/px
# and a quarter from a counting detector, as its shipped stage 8 did (the networks leave a
# grain at low dose: docs/benchmarks.md, "Is the output still noisy?"); every arm keeps
# the mean of its late weights (a keep-best snapshot of a noisy validation says little).
# The weights are checked on a CPU afterwards (benchmarks/bench_denoise_quality.py,
# bench_denoise_pair.py) before they replace the committed ones.
set -uo pipefail
OUT=${OUT:?set OUT to the output folder}
MINUTES=${MINUTES:-5.5}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu MINUTES=0.2: a dry run of this script on a CPU
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
mkdir -p "$OUT/lowdose"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
common=(--device "$DEVICE" --batch 64 --patch 128 --image-size 256 --patches-per-image 6
        --steps 1000000 --minutes "$MINUTES" --loss l2 --lr 1e-3 --warmup 200
        --val-every 500 --val-size 256 --threads 1 --average-late 0.5)
"$PY" scripts/train_bundled_denoisers.py --kind stem --init stem-denoise --seed 11 \
  --workers 5 --target recorded --detector-decay 0.9 "${common[@]}" --out "$OUT" --work /tmp/w-stem \
  > "$OUT/stem.log" 2>&1 &
"$PY" scripts/train_bundled_denoisers.py --kind hrtem --init hrtem-denoise --seed 12 \
  --workers 4 --target recorded --counting-fraction 0.25 --low-dose 0.5 10 "${common[@]}" \
  --out "$OUT" --work /tmp/w-hrtem \
  > "$OUT/hrtem.log" 2>&1 &
"$PY" scripts/train_bundled_denoisers.py --kind stem --init stem-denoise --seed 11 \
  --workers 5 --target recorded --detector-decay 0.9 --low-dose 0.5 10 "${common[@]}" \
  --out "$OUT/lowdose" --work /tmp/w-lowdose > "$OUT/lowdose.log" 2>&1 &
wait
tail -n 3 "$OUT"/stem.log "$OUT"/hrtem.log "$OUT"/lowdose.log
"$PY" benchmarks/bench_cuda_inference.py --model "$OUT/stem-denoise.safetensors" \
  --json "$OUT/cuda.json" 2>&1 | tee "$OUT/cuda.log"
