r"""PyTorch peers of two jaxpaint train steps, timed in the same run at the same settings.

  python -m benchmarks.torch_peers --image_size=64 --batch_sizes=1,16
  python -m benchmarks.run --torch_peers --models= --compute_dtypes=float32,bfloat16

Peers (written for this benchmark from the papers, see shared notes; no code copied):

* ``pix2pix``: unet_256-style U-Net generator (``num_downs`` stride-2 levels, BN, dropout 0.5
  in the levels just outside the innermost, tanh) on (masked image, mask) and the 70x70
  PatchGAN (``n_layers`` 3, BN) on (masked image, mask, image); one full pix2pix step as
  in its ``optimize_parameters``: G forward, D update on detached fake + real (BCE, x0.5),
  G update (BCE + 100 L1, D frozen), Adam(2e-4, beta1 0.5). The fake D sees is the
  composite (jaxpaint's default ``d_input``). Jitter (bicubic resize, random crop, flip) and
  random boxes are drawn on the device in the step, as jaxpaint does.
* ``pconv``: the PConv U-Net of Liu et al. with NVIDIA-style multi-channel partial
  convolutions: the mask has C_in channels and its window sums come from a full
  [C_out, C_in, kh, kw] all-ones convolution (the usual implementation); one step of
  L_valid + 6 L_hole (L1) with Adam(2e-4). jaxpaint's side runs configs/pconv.py with the
  same L1 loss and its grouped box-sum mask update.

Both sides draw the same kind of masks (random boxes: ``mask.kind='boxes'``, two boxes of
75/256 of the image side) and run the same shapes, batch and precision (bf16: autocast
with float32 master weights in PyTorch, ``compute_dtype='bfloat16'`` in jaxpaint). PyTorch
is imported lazily; install it with ``pip install torch`` (it is not a jaxpaint dependency).
``torch.compile`` is tried on the networks; a failure is reported, not raised.
"""

import gc
import math
import statistics
import time
import traceback
from typing import Any, Callable, Optional, Sequence

PEER_MODELS = ("pix2pix", "pconv")
INSTALL_HINT = ("PyTorch is needed for the peers and is not a jaxpaint dependency: "
                "pip install torch (CPU or CUDA build).")


def _torch():
  try:
    import torch  # noqa: PLC0415
  except ImportError as e:
    raise ImportError(INSTALL_HINT) from e
  return torch


# ----------------------------------------------------------------------------- shared pieces


def box_masks(torch, batch: int, size: int, num_boxes: int, box: int, device) -> Any:
  """[B, 1, H, W] float masks, 1 = known, ``num_boxes`` random box x box holes per image."""
  tops = torch.randint(0, size - box + 1, (batch, num_boxes, 1), device=device)
  lefts = torch.randint(0, size - box + 1, (batch, num_boxes, 1), device=device)
  coords = torch.arange(size, device=device)
  rows = (coords >= tops) & (coords < tops + box)  # [B, nb, H]
  cols = (coords >= lefts) & (coords < lefts + box)
  hole = (rows[..., :, None] & cols[..., None, :]).any(dim=1, keepdim=True)
  return (~hole).float()


def jitter(torch, images, jitter_size: int):
  """pix2pix's augmentation on device: bicubic resize, per-example random crop, random flip."""
  import torch.nn.functional as F  # noqa: PLC0415
  b, c, h, w = images.shape
  if not jitter_size:
    return images
  big = F.interpolate(images, size=(jitter_size, jitter_size), mode="bicubic",
                      align_corners=False).clamp(-1, 1)
  tops = torch.randint(0, jitter_size - h + 1, (b,), device=images.device)
  lefts = torch.randint(0, jitter_size - w + 1, (b,), device=images.device)
  crops = _crop(torch, big, tops, lefts, h, w)
  flip = torch.rand(b, device=images.device) < 0.5
  return torch.where(flip[:, None, None, None], crops.flip(-1), crops)


def _crop(torch, big, tops, lefts, h: int, w: int):
  """Per-example h x w windows at (tops, lefts) of big [B, C, H', W'] -> [B, C, h, w]."""
  b = big.shape[0]
  ar_h, ar_w = torch.arange(h, device=big.device), torch.arange(w, device=big.device)
  rows = (tops[:, None] + ar_h)  # [B, h]
  cols = (lefts[:, None] + ar_w)  # [B, w]
  batch = torch.arange(b, device=big.device)[:, None, None]
  nhwc = big.permute(0, 2, 3, 1)
  return nhwc[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- pix2pix peer


def build_pix2pix(torch, channels: int, num_downs: int, ngf: int, ndf: int, n_layers: int,
                  dropout: float):
  nn = torch.nn

  def width(level):
    return ngf * min(2 ** level, 8)

  class Generator(nn.Module):
    """Encoder level i: [LeakyReLU] conv4/s2 [BN]; decoder: ReLU convT4/s2 [BN] [dropout] + skip."""

    def __init__(self):
      super().__init__()
      n = num_downs
      self.down = nn.ModuleList()
      for level in range(n):
        in_ch = channels + 1 if level == 0 else width(level - 1)
        normed = 0 < level < n - 1
        layers = [] if level == 0 else [nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(in_ch, width(level), 4, 2, 1, bias=not normed))
        if normed:
          layers.append(nn.BatchNorm2d(width(level)))
        self.down.append(nn.Sequential(*layers))
      self.up = nn.ModuleList()
      for level in reversed(range(n)):
        in_ch = width(level) if level == n - 1 else 2 * width(level)
        if level == 0:
          self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(in_ch, channels, 4, 2, 1), nn.Tanh()))
          continue
        layers = [nn.ReLU(), nn.ConvTranspose2d(in_ch, width(level - 1), 4, 2, 1, bias=False),
                  nn.BatchNorm2d(width(level - 1))]
        if 4 <= level <= n - 2 and dropout > 0:
          layers.append(nn.Dropout(dropout))
        self.up.append(nn.Sequential(*layers))

    def forward(self, images, masks):
      x = torch.cat([images * masks, masks], 1)
      skips = []
      for block in self.down:
        x = block(x)
        skips.append(x)
      skips.pop()  # the innermost output is not a skip
      for block in self.up[:-1]:
        x = torch.cat([skips.pop(), block(x)], 1)
      return self.up[-1](x)

  class PatchGAN(nn.Module):
    def __init__(self):
      super().__init__()
      layers, in_ch = [], 2 * channels + 1
      for i in range(n_layers + 1):
        out_ch = ndf * min(2 ** i, 8)
        layers.append(nn.Conv2d(in_ch, out_ch, 4, 2 if i < n_layers else 1, 1, bias=i == 0))
        if i > 0:
          layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.LeakyReLU(0.2))
        in_ch = out_ch
      layers.append(nn.Conv2d(in_ch, 1, 4, 1, 1))
      self.net = nn.Sequential(*layers)

    def forward(self, x):
      return self.net(x)

  generator, discriminator = Generator(), PatchGAN()
  for module in list(generator.modules()) + list(discriminator.modules()):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(module.weight, 0.0, 0.02)
      if module.bias is not None:
        nn.init.zeros_(module.bias)
  return generator, discriminator


def pix2pix_step_fn(torch, config, device, dtype: str, compile_models: bool):
  """A closure running one pix2pix G+D step on a fixed float batch; returns (step, compile note)."""
  import torch.nn.functional as F  # noqa: PLC0415
  m = config.model
  channels = 3
  generator, discriminator = build_pix2pix(torch, channels, m.num_downs, m.base_features,
                                           m.d_base_features, m.d_layers, m.dropout_rate)
  generator, discriminator = generator.to(device).train(), discriminator.to(device).train()
  g_params = list(generator.parameters())
  opt_g = torch.optim.Adam(g_params, lr=2e-4, betas=(0.5, 0.999))
  opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
  g_fn, d_fn = generator, discriminator
  if compile_models:
    g_fn, d_fn = torch.compile(generator), torch.compile(discriminator)
  size, batch = config.image_size, config.batch_size
  images = torch.rand(batch, channels, size, size, device=device) * 2 - 1
  autocast = _autocast(torch, device, dtype)
  bce = torch.nn.BCEWithLogitsLoss()
  num_boxes, box = config.mask.num_boxes, config.mask.box_size
  lambda_l1 = config.loss.lambda_l1

  def step():
    real = jitter(torch, images, config.jitter_size)
    masks = box_masks(torch, batch, size, num_boxes, box, device)
    condition = torch.cat([real * masks, masks], 1)
    with autocast():
      raw = g_fn(real, masks)
      fake = masks * real + (1 - masks) * raw.float()
      # D update: fake detached, then real (two calls, as pix2pix).
      pred_fake = d_fn(torch.cat([condition, fake.detach()], 1)).float()
      pred_real = d_fn(torch.cat([condition, real], 1)).float()
      loss_d = 0.5 * (bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real)))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    with autocast():
      pred = d_fn(torch.cat([condition, fake], 1)).float()
      loss_g = bce(pred, torch.ones_like(pred)) + lambda_l1 * F.l1_loss(raw.float(), real)
    opt_g.zero_grad(set_to_none=True)
    # Gradients for G only, without D's weight gradients: what pix2pix's
    # set_requires_grad(netD, False) achieves, but without flipping requires_grad, which
    # would invalidate torch.compile's guards and recompile D at every step.
    loss_g.backward(inputs=g_params)
    opt_g.step()
    return loss_g

  return step


# ----------------------------------------------------------------------------- PConv peer


def build_pconv_unet(torch, channels: int, num_levels: int, base: int):
  nn, F = torch.nn, torch.nn.functional

  class PartialConv2d(nn.Conv2d):
    """Multi-channel partial convolution: the mask [B, C_in, H, W] is convolved with ones."""

    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      kh, kw = self.kernel_size
      self.register_buffer("mask_kernel", torch.ones(self.out_channels, self.in_channels, kh, kw),
                           persistent=False)
      self.slide_winsize = float(self.in_channels * kh * kw)

    def forward(self, x, mask):
      with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        update = F.conv2d(mask.float(), self.mask_kernel, None, self.stride, self.padding)
        ratio = self.slide_winsize / (update + 1e-8)
        update = update.clamp(0, 1)
        ratio = ratio * update
      raw = F.conv2d(x * mask.to(x.dtype), self.weight, None, self.stride, self.padding)
      out = raw * ratio
      if self.bias is not None:
        out = out + self.bias.view(1, -1, 1, 1)
      return out * update, update

  def width(level):
    return base * min(2 ** (level - 1), 8)

  def kernel(level):
    return 7 if level == 1 else 5 if level <= 3 else 3

  class PConvUNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.enc = nn.ModuleList()
      self.enc_bn = nn.ModuleList()
      in_ch = channels
      for level in range(1, num_levels + 1):
        k = kernel(level)
        self.enc.append(PartialConv2d(in_ch, width(level), k, 2, (k - 1) // 2, bias=level == 1))
        self.enc_bn.append(nn.BatchNorm2d(width(level)) if level > 1 else nn.Identity())
        in_ch = width(level)
      self.dec = nn.ModuleList()
      self.dec_bn = nn.ModuleList()
      for level in range(num_levels, 0, -1):
        skip_ch = channels if level == 1 else width(level - 1)
        out_ch = channels if level == 1 else width(level - 1)
        self.dec.append(PartialConv2d(in_ch + skip_ch, out_ch, 3, 1, 1, bias=level == 1))
        self.dec_bn.append(nn.BatchNorm2d(out_ch) if level > 1 else nn.Identity())
        in_ch = out_ch

    def forward(self, images, masks):
      x, m = images, masks.expand_as(images)
      skips = [(x, m)]
      for conv, bn in zip(self.enc, self.enc_bn):
        x, m = conv(x, m)
        x = F.relu(bn(x))
        skips.append((x, m))
      skips.pop()
      for i, (conv, bn) in enumerate(zip(self.dec, self.dec_bn)):
        skip_x, skip_m = skips.pop()
        x = torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip_x.to(x.dtype)], 1)
        m = torch.cat([F.interpolate(m, scale_factor=2, mode="nearest"), skip_m], 1)
        x, m = conv(x, m)
        if i < len(self.dec) - 1:
          x = F.leaky_relu(bn(x), 0.2)
      return x

  return PConvUNet()


def pconv_step_fn(torch, config, device, dtype: str, compile_models: bool):
  m = config.model
  channels = 3
  model = build_pconv_unet(torch, channels, m.num_levels, m.base_features).to(device).train()
  opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
  fn = torch.compile(model) if compile_models else model
  size, batch = config.image_size, config.batch_size
  images = torch.rand(batch, channels, size, size, device=device) * 2 - 1
  autocast = _autocast(torch, device, dtype)
  num_boxes, box = config.mask.num_boxes, config.mask.box_size
  w_valid, w_hole = config.loss.valid, config.loss.hole

  def step():
    masks = box_masks(torch, batch, size, num_boxes, box, device)
    with autocast():
      out = fn(images, masks).float()
    diff = out - images
    loss = w_valid * (masks * diff).abs().mean() + w_hole * ((1 - masks) * diff).abs().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  return step


# ----------------------------------------------------------------------------- timing


def _autocast(torch, device, dtype: str) -> Callable[[], Any]:
  if dtype == "bfloat16":
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
  import contextlib  # noqa: PLC0415
  return contextlib.nullcontext


def _sync(torch, device) -> None:
  if device.type == "cuda":
    torch.cuda.synchronize(device)


class TorchTimer:
  """A PyTorch step: the first call (torch.compile's compilation) timed alone, then warm-up."""

  def __init__(self, torch, step: Callable[[], Any], device, warmup: int):
    self.torch, self.step, self.device = torch, step, device
    start = time.perf_counter()
    self.loss = step()
    _sync(torch, device)
    self.first_call_s = time.perf_counter() - start
    for _ in range(warmup):
      self.loss = step()
    _sync(torch, device)

  def time(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      self.loss = self.step()
    _sync(self.torch, self.device)
    return steps / (time.perf_counter() - start)

  def result(self, rates: Sequence[float], images_per_step: int) -> dict[str, Any]:
    median = statistics.median(rates)
    return {"first_call_s": self.first_call_s,
            "steps_per_s": {"median": median, "min": min(rates), "max": max(rates)},
            "images_per_s": {"median": median * images_per_step, "min": min(rates) * images_per_step,
                             "max": max(rates) * images_per_step},
            "step_ms_median": 1000.0 / median,
            "final_loss_finite": bool(math.isfinite(float(self.loss.detach())))}


# ----------------------------------------------------------------------------- comparisons


def jaxpaint_sets(model: str, image_size: int) -> tuple[tuple[str, Any], ...]:
  """Overrides that make jaxpaint's config do the peer's work (masks, loss)."""
  box = max(1, round(75 * image_size / 256))
  masks = (("mask.kind", "boxes"), ("mask.num_boxes", 2), ("mask.box_size", box),
           ("mask.box_max_size", 0))
  if model == "pconv":
    return masks + (("loss.valid", 1.0), ("loss.hole", 6.0), ("loss.tv", 0.0), ("loss.mse", 0.0),
                    ("loss.perceptual", 0.0), ("loss.style", 0.0), ("model.mask_update", "fast"),
                    ("model.partial", True), ("model.output_activation", "none"))
  return masks + (("model.d_input", "composite"), ("loss.gan", "vanilla"))


def compare(models: Sequence[str], batch_sizes: Sequence[Optional[int]], compute_dtypes: Sequence[str], *,
            image_size: Optional[int] = None, width_scale: float = 1.0, steps: int = 10,
            repeats: int = 3, warmup: int = 2, compile_models: bool = True,
            peak_tflops: Optional[float] = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """For each model x dtype x batch: jaxpaint's step and the PyTorch peer, eager and compiled.

  The three are built and warmed first, then timed round-robin
  (:func:`benchmarks.harness.time_interleaved`), so they see the same machine load.
  Returns {"torch": version info, "results": [...]}; each result holds the jaxpaint record
  (as :func:`benchmarks.run.benchmark` makes it), the peers' timings or failures, and the
  ratios jaxpaint images/s / peer images/s.
  """
  from benchmarks import harness, registry  # noqa: PLC0415
  from benchmarks import run as run_lib  # noqa: PLC0415
  unknown = sorted(set(models) - set(PEER_MODELS))
  if unknown:
    raise ValueError(f"unknown torch peer models {unknown}; choose from {PEER_MODELS}.")
  torch = _torch()
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  info = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
          "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
  modes = ("eager", "compiled") if compile_models else ("eager",)
  results = []
  for model in models:
    base_spec = registry.BY_NAME[model]
    for dtype in compute_dtypes:
      for batch in batch_sizes:
        config_size = image_size or harness_image_size(base_spec)
        spec = registry.Spec(f"{model}_vs_torch", base_spec.config_file, base_spec.description,
                             sets=jaxpaint_sets(model, config_size))
        record, program = run_lib.prepare(spec, batch, dtype, image_size=image_size,
                                          width_scale=width_scale, num_keys=steps * repeats + warmup + 1)
        entry: dict[str, Any] = {"model": model, "compute_dtype": dtype, "jaxpaint": record}
        results.append(entry)
        if program is None:
          log(f"torch peer {model} [{dtype}, batch {batch}]: jaxpaint side {record['status']}: "
              f"{record['reason']}")
          continue
        config = _config_for_peer(record)
        entry.update(batch_size=config.batch_size, image_size=config.image_size)
        try:
          runner = harness.Runner(program)
          runner.warmup(warmup)
        except Exception as e:  # noqa: BLE001
          run_lib.mark_failed(record, e)
          log(f"torch peer {model} [{dtype}, batch {batch}]: jaxpaint side failed: {record['reason']}")
          continue
        timers = {"jaxpaint": runner.time}
        peers = {}
        make = pix2pix_step_fn if model == "pix2pix" else pconv_step_fn
        for mode in modes:
          torch._dynamo.reset()  # no graphs (or dynamic-shape guesses) from another batch size
          torch.manual_seed(0)
          try:
            peers[mode] = TorchTimer(torch, make(torch, config, device, dtype, compile_models=mode == "compiled"),
                                     device, warmup)
            timers[mode] = peers[mode].time
          except Exception as e:  # noqa: BLE001 (torch.compile may fail on a platform)
            entry[f"torch_{mode}"] = {"status": "failed",
                                      "reason": f"{type(e).__name__}: {e}".splitlines()[0][:300],
                                      "traceback": traceback.format_exc()[-2000:]}
            log(f"torch peer {model} [{dtype}, batch {config.batch_size}] {mode}: failed: "
                f"{entry[f'torch_{mode}']['reason']}")
        rates = harness.time_interleaved(timers, steps=steps, repeats=repeats)
        record.update(runner.result(rates["jaxpaint"], steps, peak_tflops), status="ok",
                      interleaved_with=[f"torch_{m}" for m in peers])
        jax_rate = record["images_per_s"]["median"]
        for mode, timer in peers.items():
          timing = {**timer.result(rates[mode], config.batch_size), "status": "ok"}
          timing["jaxpaint_over_peer"] = jax_rate / timing["images_per_s"]["median"]
          entry[f"torch_{mode}"] = timing
          log(f"torch peer {model} [{dtype}, batch {config.batch_size}, {config.image_size}px] {mode}: "
              f"{timing['images_per_s']['median']:.3g} images/s (first call {timing['first_call_s']:.1f} s); "
              f"jaxpaint {jax_rate:.3g} images/s -> jaxpaint/peer = {timing['jaxpaint_over_peer']:.2f}")
        del runner, timers, peers, program
        gc.collect()
  return {"torch": info, "results": results,
          "note": "jaxpaint_over_peer = jaxpaint images/s / PyTorch images/s (same model, shapes, "
                  "batch, precision, masks; > 1 means jaxpaint is faster). The three programs are "
                  "timed round-robin, repeat by repeat."}


def harness_image_size(spec) -> int:
  from benchmarks import harness  # noqa: PLC0415
  return harness.load_config(spec.config_file).image_size


def _config_for_peer(record: dict[str, Any]):
  """The jaxpaint config the record ran (model, loss, masks, sizes), for the peer to copy."""
  import ml_collections  # noqa: PLC0415
  from benchmarks import harness, registry  # noqa: PLC0415
  base = registry.BY_NAME[record["model"].replace("_vs_torch", "")]
  config = harness.load_config(base.config_file)
  config = ml_collections.ConfigDict(config.to_dict())
  for dotted, value in record["changes"].items():
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def table(out: dict[str, Any]) -> str:
  from benchmarks import harness  # noqa: PLC0415
  rows = []
  for e in out["results"]:
    j = e["jaxpaint"]
    if j["status"] != "ok":
      rows.append((e["model"], e["compute_dtype"], j.get("batch_size", "-"), j.get("image_size", "-"),
                   f"jaxpaint {j['status']}", "-", "-", "-", "-"))
      continue
    cells = []
    for mode in ("torch_eager", "torch_compiled"):
      t = e.get(mode)
      if t is None:
        cells += ["not run", "-"]
      elif t["status"] == "ok":
        cells += [f"{t['images_per_s']['median']:.3g}", f"{t['jaxpaint_over_peer']:.2f}x"]
      else:
        cells += [f"failed: {t['reason'][:60]}", "-"]
    rows.append((e["model"], e["compute_dtype"], e["batch_size"], e["image_size"],
                 f"{j['images_per_s']['median']:.3g}", *cells))
  return (f"PyTorch {out['torch']['torch']} on {out['torch']['device_name']} "
          f"({out['torch']['threads']} threads)\n" + harness.format_table(
              rows, ("model", "dtype", "batch", "px", "jaxpaint images/s", "torch eager images/s",
                     "jaxpaint/eager", "torch.compile images/s", "jaxpaint/compiled")))


if __name__ == "__main__":
  from benchmarks import run as run_lib  # noqa: PLC0415
  run_lib.cli(mode="torch_peers")
