"""The benchmarks run without grain, TensorFlow, TFDS and clu (a GPU machine with only jax/flax).

Each check runs in a fresh interpreter whose ``sys.modules`` maps those packages to None, so
any import of them raises ImportError, as on a machine where they are not installed.
"""

import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BLOCK = textwrap.dedent("""\
    import json, sys
    for name in ("grain", "tensorflow", "tensorflow_datasets", "clu"):
      sys.modules[name] = None  # importing it now raises ImportError
    """)


def _run(code: str) -> dict:
  proc = subprocess.run([sys.executable, "-c", _BLOCK + textwrap.dedent(code)], cwd=REPO,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_benchmarks_import_and_build_a_program_without_the_data_stack():
  out = _run("""
      import benchmarks.run, benchmarks.torch_peers, benchmarks.report
      from benchmarks import harness, registry, run
      config = harness.load_config("pix2pix.py")
      record, program = run.prepare(registry.BY_NAME["pix2pix"], 2, "float32", image_size=32,
                                    width_scale=1 / 16)
      heavy = sorted(m for m in ("grain", "tensorflow", "tensorflow_datasets", "clu")
                     if sys.modules.get(m) is not None)
      print(json.dumps({"data_name": config.data.name, "model": config.model.name,
                        "status": record.get("status"), "reason": record.get("reason"), "built": program is not None,
                        "images": program.images_per_call if program else None,
                        "heavy": heavy}))
      """)
  assert out["data_name"] == "celeb_a" and out["model"] == "pix2pix"
  assert out["built"] and out["status"] is None and out["images"] == 2, out["reason"]
  assert out["heavy"] == []


def test_input_pipeline_without_grain_says_what_is_missing():
  out = _run("""
      from benchmarks import input_pipeline
      try:
        input_pipeline.run("unet_celeba.py", [(2, 16)], sources=["samples"])
        message = None
      except ImportError as e:
        message = str(e)
      print(json.dumps({"message": message}))
      """)
  assert out["message"] and "grain" in out["message"] and "--input_pipeline" in out["message"]
