#!/usr/bin/env bash
# The prepared GPU session: on a lent CUDA machine, train the bundled denoisers at scale and
# measure CUDA inference, in about 8 minutes. Run from the repository root:
#   OUT=/some/folder MINUTES=5.5 bash scripts/gpu_session.sh
# Writes to $OUT: stem-denoise.safetensors, hrtem-denoise.safetensors (the new bundled
# candidates, each with its command, seed and validation curve in its header), a STEM arm
# with the gradient loss term (gradient/stem-denoise.safetensors), one log per run and
# cuda.json. The STEM arms train with the detector's decay on half the images (without it
# the recorded-target networks draw the real TIA frames' smeared noise as texture) and
# every arm keeps the mean of its late weights (a keep-best snapshot of a noisy validation
# says little), as docs/benchmarks.md ("The detector's decay") measured on a CPU.
# The weights are checked on a CPU afterwards (benchmarks/bench_denoise_quality.py,
# bench_denoise_pair.py) before they replace the committed ones.
set -uo pipefail
OUT=${OUT:?set OUT to the output folder}
MINUTES=${MINUTES:-5.5}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu MINUTES=0.2: a dry run of this script on a CPU
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
mkdir -p "$OUT/gradient"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
common=(--device "$DEVICE" --batch 64 --patch 128 --image-size 256 --patches-per-image 6
        --steps 1000000 --minutes "$MINUTES" --loss l2 --lr 1e-3 --warmup 200
        --val-every 500 --val-size 256 --threads 1 --average-late 0.5)
"$PY" scripts/train_bundled_denoisers.py --kind stem --init stem-denoise --seed 11 \
  --workers 5 --target recorded --detector-decay 0.5 "${common[@]}" --out "$OUT" --work /tmp/w-stem \
  > "$OUT/stem.log" 2>&1 &
"$PY" scripts/train_bundled_denoisers.py --kind hrtem --init hrtem-denoise --seed 12 \
  --workers 4 --target recorded "${common[@]}" --out "$OUT" --work /tmp/w-hrtem \
  > "$OUT/hrtem.log" 2>&1 &
"$PY" scripts/train_bundled_denoisers.py --kind stem --init stem-denoise --seed 11 \
  --workers 5 --target recorded --detector-decay 0.5 --term gradient=0.05 "${common[@]}" \
  --out "$OUT/gradient" --work /tmp/w-gradient > "$OUT/gradient.log" 2>&1 &
wait
tail -n 3 "$OUT"/stem.log "$OUT"/hrtem.log "$OUT"/gradient.log
"$PY" benchmarks/bench_cuda_inference.py --model "$OUT/stem-denoise.safetensors" \
  --json "$OUT/cuda.json" 2>&1 | tee "$OUT/cuda.log"
