"""Throughput benchmarks of jaxpaint's train steps, its input pipeline and PyTorch peers.

  python -m benchmarks.run --models=unet,pix2pix --batch_sizes=1,16 --output=/tmp/bench.json
  python -m benchmarks.input_pipeline --output=/tmp/pipeline.json
  python -m benchmarks.torch_peers --output=/tmp/peers.json

See ``benchmarks/RESULTS.md`` for measured numbers and the exact commands behind them.
"""
