r"""Markdown tables from result files of :mod:`benchmarks.run`, for ``RESULTS.md``.

  python -m benchmarks.report benchmarks/results/*.json
"""

import json
import sys

from benchmarks import input_pipeline, run, torch_peers


def render(path: str) -> str:
  with open(path) as f:
    data = json.load(f)
  env = data["environment"]
  lines = [f"`{env['command']}`", "",
           f"{env['device_count']} x {env['device_kind']} ({env['platform']}), {env['cpu_count']} host "
           f"CPUs; jax {env['jax']}, flax {env['flax']}; commit {env['git_commit']}"
           f"{' (HEAD ' + env['git_head'][:10] + ')' if env.get('git_head') else ''}; {env['date']}", ""]
  if data.get("results"):
    lines += [run.results_table(data["results"]), ""]
    text = run.comparisons_text(data["comparisons"])
    if text:
      lines += ["```", text, "```", ""]
  if data.get("input_pipeline"):
    lines += [input_pipeline.table(data["input_pipeline"]), ""]
  peers = data.get("torch_peers")
  if peers:
    lines += [torch_peers.table(peers) if "results" in peers else f"torch peers: {peers}", ""]
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise SystemExit("usage: python -m benchmarks.report RESULT.json [...]")
  print("\n\n".join(render(path) for path in argv[1:]))


if __name__ == "__main__":
  main(sys.argv)
