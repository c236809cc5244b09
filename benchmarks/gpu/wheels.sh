#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with the wheels the GPU machine lacks for benchmarks/gpu/run.sh.
#
# Run here, where PyPI answers; the GPU machine (Python 3.12, x86-64) has no network. Its image
# already has jax, flax, optax, orbax-checkpoint, absl-py, etils, cloudpickle, protobuf, psutil,
# pyyaml, numpy, scikit-image, pillow, torch and pytest. It lacks:
#   ml-collections  every config file and benchmarks.harness
#   grain           jaxpaint.data, for the input-pipeline piece (samples and folder sources);
#   array-record    (compiled) and portpicker are grain's imports the image lacks.
# TensorFlow, TFDS and clu are not carried: the benchmarks run without them.
#
#   bash benchmarks/gpu/wheels.sh                    # the pinned set below
#   bash benchmarks/gpu/wheels.sh flax==0.12.8       # plus extra pins (wheels only, no deps)
#
# Then every device call names carry=[".whl"]; run.sh installs them into /tmp/site there.
set -euo pipefail
cd "$(dirname "$0")/../.."

PINS=(ml-collections==1.1.0 grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 "$@")
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done

rm -rf .whl
mkdir -p .whl
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d .whl "${PINS[@]}" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# One version of each package, or the install there stops.
dupes=$(ls .whl | sed -E 's/-[0-9][^-]*-.*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "two versions of: $dupes" >&2
  exit 1
fi
ls -l .whl
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
echo "total: $(python3 -c "print(f'{$total / 2**20:.2f}')") MiB in $(ls .whl/*.whl | wc -l) wheels"
if [ "$total" -gt $((40 * 1024 * 1024)) ]; then
  echo "over 40 MiB: the working tree that travels is limited to 64 MiB" >&2
  exit 1
fi
