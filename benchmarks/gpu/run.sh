#!/usr/bin/env bash
# One device call of the GPU benchmark session (issue 7): bash benchmarks/gpu/run.sh PART...
#
# Parts, run in the order given (each meant to take well under 9 min on an H100, compiles
# included; sized from CPU runs, not yet timed on a GPU):
#   smoke     pytest subset on the host CPU (jax/flax API check), kernel tests on the GPU, and a
#             tiny benchmarks.run of every model (fp32 + bf16) and of the torch peers (eager)
#                                                              -> smoke.json, smoke_peers.json
#   pix2pix   Pix2Pix at 256 px, batch 1 and 64, fp32 and bf16                 -> pix2pix.json
#   profile   benchmarks/profile.py on Pix2Pix batch 64 bf16, alone and beside its PyTorch peer
#             -> profile.zip (traces, profile_summary.json) and the top ops in the log
#   pipeline  grain input pipeline (samples, folder) next to the U-Net step, 0 and 8 workers
#                                                      -> pipeline.json, pipeline_workers.json
#   peers     PyTorch peers: Pix2Pix batch 1 and 64, bf16 eager and torch.compile, fp32 eager;
#             PConv at its config's batch (8), fp32 and bf16, eager
#                                    -> peers_pix2pix_bf16.json, peers_pix2pix_fp32.json, peers_pconv.json
#   models    every other model at its config's size and batch, fp32 and bf16 (latent search cut
#             to 100 iterations)     -> models_pconv_unet.json, models_gans.json, models_search.json
#
# Two calls cover issue 7 (tool `run`, carry=[".whl"], timeout_s=600; .whl/ from wheels.sh):
#   bash benchmarks/gpu/run.sh smoke pix2pix profile pipeline
#   bash benchmarks/gpu/run.sh peers models
# Everything goes to $OUT (else ./gpu_out): JSONs, log.txt, profile.zip; at most 8 files a call.
# A time budget (JAXPAINT_GPU_BUDGET_S, default 550 s from the start) guards every piece: a piece
# starts only if its minimum is left, is killed when the budget ends, and later pieces are skipped,
# so the log and the finished JSONs come back before the device's 600 s limit. Exit status 1
# when a piece failed or was skipped: rerun the skipped part in a later call.
#
# CPU rehearsal (no GPU): JAXPAINT_GPU_SMOKE_TINY=1 shrinks every size, uses 2 pytest workers
# and runs the "GPU" tests on the CPU.
cd "$(dirname "$0")/../.." || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT" || exit 1

TINY=${JAXPAINT_GPU_SMOKE_TINY:-0}
BUDGET=${JAXPAINT_GPU_BUDGET_S:-550}
GPU_PLATFORM=${JAXPAINT_GPU_PLATFORM:-cuda}
WORKERS=8
if [ "$TINY" = 1 ]; then
  GPU_PLATFORM=${JAXPAINT_GPU_PLATFORM:-cpu}
  WORKERS=2
fi
# Timed runs: long enough for a steady median on a GPU, few compiles.
TIMING=(--steps=10 --repeats=5 --warmup=2)
P2P_BATCHES=1,64
DTYPES=float32,bfloat16
MODEL_BATCH=()  # each config's own batch size
SEARCH_TIMING=(--steps=2 --repeats=3 --warmup=1)
PIPELINE_BATCH=128  # the U-Net config's
PIPELINE_WORKERS=8
if [ "$TINY" = 1 ]; then
  TIMING=(--steps=2 --repeats=1 --warmup=1 --image_size=32 --width_scale=0.125)
  P2P_BATCHES=1,2
  DTYPES=float32
  MODEL_BATCH=(--batch_sizes=4)
  SEARCH_TIMING=(--steps=1 --repeats=1 --warmup=0)
  PIPELINE_BATCH=2
  PIPELINE_WORKERS=2
fi
# The latent search at its full 8 x 1000 iterations costs minutes per call at batch 64; 100
# iterations give its per-iteration cost (the loop is linear in them; see the record's changes).
# The refiner's step runs its own 100-iteration search: both get few timed calls.
SEARCH=(--set=latent_search.num_steps=100)
# Pix2Pix's programs are compiled by the pix2pix part and again by profile: a cache shares them.
CACHE=/tmp/jaxpaint_gpu_jax_cache

FAILED=()
START=$SECONDS

left() { echo $((BUDGET - (SECONDS - START))); }

# piece NAME MIN_SECONDS COMMAND...: runs COMMAND if MIN_SECONDS are left, killed when the budget ends.
piece() {
  local name=$1 need=$2
  shift 2
  local remaining
  remaining=$(left)
  if [ "$remaining" -lt "$need" ]; then
    echo "=== $name: SKIPPED, ${remaining}s of the budget left, needs ${need}s"
    FAILED+=("$name(skipped)")
    return
  fi
  echo "=== $name: start at $((SECONDS - START))s, limit $((remaining - 5))s: $*"
  local t0=$SECONDS rc=0
  timeout --signal=TERM --kill-after=5 $((remaining - 5)) "$@" || rc=$?
  echo "=== $name: rc=$rc after $((SECONDS - t0))s"
  if [ "$rc" -ne 0 ]; then
    FAILED+=("$name(rc=$rc)")
  fi
}

versions() {
  echo "=== parts: $*; budget ${BUDGET}s; tiny=$TINY; out=$OUT; $(date -u +%FT%TZ)"
  nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not available"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo 'no git here'); changed files: $(git status --porcelain 2>/dev/null | wc -l)"
  python3 - <<'EOF'
import importlib.metadata as md
import platform
names = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "flax", "optax",
         "orbax-checkpoint", "chex", "numpy", "scipy", "scikit-image", "ml-collections", "grain",
         "array-record", "etils", "absl-py", "protobuf", "torch", "pytest", "pytest-xdist")
versions = []
for name in names:
  try:
    versions.append(f"{name} {md.version(name)}")
  except md.PackageNotFoundError:
    versions.append(f"{name} -")
print(f"python {platform.python_version()}; " + "; ".join(versions))
import jax
print("jax devices:", jax.devices())
try:
  import torch
  print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
except ImportError as e:
  print("torch: not importable:", e)
EOF
}

# Test files that need neither grain/TFDS/clu nor the driver; the CLI test reads TFDS sources.
SMOKE_TESTS=(tests/test_benchmarks_light.py tests/test_benchmarks.py tests/test_adversarial.py tests/test_conv_transpose.py
  tests/test_context_encoder.py tests/test_dcgan.py tests/test_latent_search.py tests/test_masks.py
  tests/test_metrics.py tests/test_partial_conv.py tests/test_pconv_unet.py tests/test_pix2pix.py
  tests/test_reconstruction.py tests/test_unet.py tests/test_vaegan.py)
# Kernel tests on the GPU at full float32 precision (the default would allow TF32).
GPU_TESTS=(tests/test_partial_conv.py tests/test_pix2pix.py tests/test_unet.py tests/test_conv_transpose.py)
ALL_MODELS=unet,pconv,pconv_plain,pconv_naive,pix2pix,lsgan,lsgan_inpaint,refiner,context_encoder,vaegan

part_smoke() {
  piece smoke_pytest_cpu 60 env JAX_PLATFORMS=cpu python3 -m pytest -q --tb=short --maxfail=20 \
    -p no:cacheprovider -n "$WORKERS" "${SMOKE_TESTS[@]}" \
    --deselect tests/test_benchmarks.py::test_cli_times_a_tiny_unet_and_writes_json
  piece smoke_pytest_gpu 60 env JAX_PLATFORMS="$GPU_PLATFORM" JAX_DEFAULT_MATMUL_PRECISION=highest \
    XLA_PYTHON_CLIENT_PREALLOCATE=false python3 -m pytest -q --tb=short --maxfail=10 \
    -p no:cacheprovider "${GPU_TESTS[@]}"
  local tiny=(--image_size=64 --width_scale=0.25 --compute_dtypes=float32,bfloat16)
  if [ "$TINY" = 1 ]; then
    tiny=(--image_size=32 --width_scale=0.125 --compute_dtypes=float32)
  fi
  piece smoke_models 60 python3 -m benchmarks.run --models="$ALL_MODELS" --batch_sizes=2 \
    "${tiny[@]}" --steps=2 --repeats=1 --warmup=1 --set=latent_search.num_steps=5 \
    --set=latent_search.num_candidates=2 --set=latent_search.train_num_steps=5 \
    --output="$OUT/smoke.json"
  piece smoke_peers 60 python3 -m benchmarks.torch_peers --batch_sizes=2 "${tiny[@]}" --steps=2 \
    --repeats=1 --warmup=1 --notorch_compile --output="$OUT/smoke_peers.json"
}

part_pix2pix() {
  rm -rf "$CACHE"  # compile times are measured: no programs cached by an earlier call
  piece pix2pix 120 env JAX_COMPILATION_CACHE_DIR="$CACHE" python3 -m benchmarks.run \
    --models=pix2pix --batch_sizes="$P2P_BATCHES" --compute_dtypes="$DTYPES" "${TIMING[@]}" \
    --output="$OUT/pix2pix.json"
}

part_profile() {
  # benchmarks/profile.py: trace, top ops and categories (log, profile_summary.json); then the same
  # with the PyTorch peer's steps alternating (its settings: masks, loss). All zipped.
  local logdir=/tmp/jaxpaint_gpu_profile
  local args=(--model=pix2pix --batch_size=64 --compute_dtype=bfloat16 --steps=5 --warmup=3)
  if [ "$TINY" = 1 ]; then
    args=(--model=pix2pix --batch_size=2 --image_size=32 --width_scale=0.125 --compute_dtype=float32
          --steps=2 --warmup=1)
  fi
  rm -rf "$logdir"
  piece profile 60 env JAX_COMPILATION_CACHE_DIR="$CACHE" python3 -m benchmarks.profile "${args[@]}" \
    --logdir="$logdir/jaxpaint"
  if python3 -c "import torch" 2>/dev/null; then
    piece profile_vs_torch 90 python3 -m benchmarks.profile "${args[@]}" --torch_peer \
      --logdir="$logdir/vs_torch"
  else
    echo "=== profile_vs_torch: not run, torch is not importable"
  fi
  [ -d "$logdir" ] || return
  # One zip under the 16 MiB a returned file may have; without the raw xplane files if larger.
  python3 - "$logdir" "$OUT/profile.zip" <<'EOF'
import os, sys, zipfile
logdir, target = sys.argv[1:]
files = sorted(os.path.join(d, f) for d, _, names in os.walk(logdir) for f in names)
for skip in ((), (".xplane.pb",), (".xplane.pb", ".hlo.txt")):
  with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
    for path in files:
      if not skip or not path.endswith(skip):
        z.write(path, os.path.relpath(path, logdir))
  if os.path.getsize(target) < 15 * 2**20:
    break
print(f"=== profile.zip: {os.path.getsize(target) / 2**20:.1f} MiB from {len(files)} files"
      + (f", left out {skip}" if skip else ""))
EOF
}

part_peers() {
  # torch.compile costs a minute or more per setting: only for Pix2Pix bf16; the rest is eager,
  # the issues' reference.
  piece peers_pix2pix_bf16 150 python3 -m benchmarks.torch_peers --torch_models=pix2pix \
    --batch_sizes="$P2P_BATCHES" --compute_dtypes=bfloat16 "${TIMING[@]}" \
    --output="$OUT/peers_pix2pix_bf16.json"
  piece peers_pix2pix_fp32 150 python3 -m benchmarks.torch_peers --torch_models=pix2pix \
    --batch_sizes="$P2P_BATCHES" --compute_dtypes=float32 "${TIMING[@]}" --notorch_compile \
    --output="$OUT/peers_pix2pix_fp32.json"
  piece peers_pconv 120 python3 -m benchmarks.torch_peers --torch_models=pconv \
    --compute_dtypes="$DTYPES" "${TIMING[@]}" --notorch_compile --output="$OUT/peers_pconv.json"
}

part_models() {
  # Pix2Pix is left to the pix2pix part (batch 1 is its config's batch).
  piece models_pconv_unet 120 python3 -m benchmarks.run --models=pconv,pconv_plain,pconv_naive,unet \
    --compute_dtypes="$DTYPES" "${TIMING[@]}" "${MODEL_BATCH[@]}" --output="$OUT/models_pconv_unet.json"
  piece models_gans 100 python3 -m benchmarks.run --models=context_encoder,vaegan,lsgan \
    --compute_dtypes="$DTYPES" "${TIMING[@]}" "${MODEL_BATCH[@]}" --output="$OUT/models_gans.json"
  piece models_search 60 python3 -m benchmarks.run --models=refiner,lsgan_inpaint \
    --compute_dtypes="$DTYPES" "${TIMING[@]}" "${MODEL_BATCH[@]}" "${SEARCH_TIMING[@]}" "${SEARCH[@]}" \
    --output="$OUT/models_search.json"
}

part_pipeline() {
  # grain's pipeline on the built-in sources next to the U-Net step (issue 7: >= 2x its rate),
  # decoding in threads (the config's worker_count 0), then in worker processes.
  local shape=(--batch_sizes="$PIPELINE_BATCH")
  if [ "$TINY" = 1 ]; then shape+=(--image_size=32 --width_scale=0.125); fi
  piece pipeline 90 python3 -m benchmarks.run --models=unet --input_pipeline \
    --pipeline_sources=samples,folder "${shape[@]}" --steps=10 --repeats=3 --warmup=2 \
    --output="$OUT/pipeline.json"
  piece pipeline_workers 90 python3 -m benchmarks.run --models=unet --input_pipeline \
    --worker_count="$PIPELINE_WORKERS" --pipeline_sources=samples,folder "${shape[@]}" --steps=10 --repeats=3 --warmup=2 \
    --output="$OUT/pipeline_workers.json"
}

main() {
  versions "$@"
  for part in "$@"; do
    case "$part" in
      smoke|pix2pix|profile|peers|models|pipeline) "part_$part" ;;
      *) echo "unknown part $part (smoke pix2pix profile peers models pipeline)"; FAILED+=("$part") ;;
    esac
  done
  echo "=== done after $((SECONDS - START))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "=== not ok: ${FAILED[*]}"
    return 1
  fi
  echo "=== all pieces ok"
}

main "$@" 2>&1 | tee -a "$OUT/log.txt"
