"""Train GPT-2 on token shards, from one CPU to many GPUs (run it under `torchrun` for data parallelism).

Reads the shard directory that `webtext encode` wrote and a job file (`jobs/train-*.toml`); writes the run
directory: checkpoint.pt (every `checkpoint_every` steps and on exit, atomically), tokenizer.json, and
metrics.jsonl. `--resume` continues a run exactly where its checkpoint left it, data position included.
Ctrl-C or SIGTERM stops after the current step and saves a checkpoint first.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from webtext.encode import shards as shard_format
from webtext.model import checkpoint, data
from webtext.model.config import GPTConfig, JobConfig, TrainConfig, load_job
from webtext.model.model import GPT

EXAMPLE = """  webtext train --data out/shards --config jobs/train-tiny.toml --out out/run-tiny
  webtext train --data out/shards --config jobs/train-tiny.toml --out out/run-tiny --resume
  torchrun --nproc_per_node 8 -m webtext.cli train --data out/shards --config jobs/train-gpt2.toml --out out/run-gpt2"""


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="token shard directory (has manifest.json)")
    parser.add_argument("--config", required=True, help="job file, e.g. jobs/train-gpt2.toml")
    parser.add_argument("--out", required=True, help="run directory for checkpoints and metrics")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt if it exists")
    parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                        help="save and stop once STEP optimizer steps are done (the schedule still runs to "
                             "max_steps; for time-limited jobs)")
    parser.add_argument("--max-seconds", type=float, default=None, metavar="S",
                        help="save and stop after S seconds of training (the schedule still runs to max_steps)")
    parser.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")


def main(args) -> int:
    try:
        job = load_job(args.config)
        summary = train(args.data, job, args.out, resume=args.resume, stop_at=args.stop_at,
                        progress=not args.no_progress, max_seconds=args.max_seconds)
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # bad job file, data or run directory
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary["rank"] == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "rank"}))
    return 0


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def autocast(device: torch.device, dtype: str):
    """The mixed-precision context for `dtype` (config field `train.dtype`)."""
    if dtype == "auto":
        use = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    else:
        use = {"float32": None, "bfloat16": torch.bfloat16}.get(dtype, "bad")
        if use == "bad":
            raise ValueError(f"train.dtype {dtype!r}: choose auto, float32 or bfloat16")
    return contextlib.nullcontext() if use is None else torch.autocast(device.type, dtype=use)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_learning_rate at decay_steps."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    if step >= cfg.decay_steps:
        return cfg.min_learning_rate
    ratio = (step - cfg.warmup_steps) / max(1, cfg.decay_steps - cfg.warmup_steps)
    return cfg.min_learning_rate + 0.5 * (1 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_learning_rate)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, device: torch.device, amp) -> tuple[float, int]:
    """Mean next-token loss over all batches of all ranks, and the number of tokens it covers."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for x, y, _ in batches:
        x, y = x.to(device), y.to(device)
        with amp:
            _, loss = model(x, y)
        total += torch.tensor([loss.double().item() * y.numel(), y.numel()], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(total)
    model.train(was_training)
    tokens = int(total[1].item())
    return (total[0].item() / tokens if tokens else float("nan")), tokens


def _rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.zeros(0, dtype=torch.uint8)}


def _gather(obj, world: Dist) -> list:
    if world.world_size == 1:
        return [obj]
    out = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


class _StopFlag:
    """Ctrl-C / SIGTERM ask for a clean stop after the current step; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"signal {signum}: stopping after this step and saving a checkpoint", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Progress:
    """A rich progress bar on a terminal, plain log lines elsewhere; only on rank 0."""

    def __init__(self, enabled: bool, total: int, done: int, bar: bool = True):
        self.bar = None
        self.enabled = enabled
        if enabled and bar and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=done, loss=float("nan"), tps=0.0)

    def update(self, step: int, record: dict) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=record["loss"], tps=record["tokens_per_s"])
        elif self.enabled:
            print(f"step {step} loss {record['loss']:.4f} lr {record['lr']:.3g} "
                  f"{record['tokens_per_s']:,.0f} tok/s", flush=True)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
        elif self.enabled:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _Metrics:
    """RUN/metrics.jsonl (and TensorBoard when it is installed), written by rank 0."""

    def __init__(self, run_dir: str, enabled: bool, keep_until_step: int):
        self.enabled = enabled
        self.path = os.path.join(run_dir, checkpoint.METRICS)
        self.tb = None
        if not enabled:
            return
        if os.path.exists(self.path):  # drop records from after the checkpoint we resume from
            with open(self.path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= keep_until_step]
            with open(self.path + ".tmp", "w") as f:
                f.writelines(kept)
            os.replace(self.path + ".tmp", self.path)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))
        except ImportError:
            pass

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _model_config(job: JobConfig, manifest: dict) -> GPTConfig:
    vocab = manifest["tokenizer"]["vocab_size"]
    if job.vocab_size_given:
        data.check_tokenizer(manifest, vocab_size=job.model.vocab_size, expected_from="the job file")
    return GPTConfig(**{**checkpoint.config_dict(job.model), "vocab_size": vocab})


def train(data_dir: str, job: JobConfig, run_dir: str, resume: bool = False, stop_at: int | None = None,
          progress: bool = True, max_seconds: float | None = None) -> dict:
    """Train per `job` on the shards in `data_dir`, writing `run_dir`; returns a summary of the run.
    `stop_at` (a step) and `max_seconds` (wall clock) end the run early with a checkpoint, leaving the
    schedule as configured, so `--resume` can carry on."""
    cfg = job.train
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    world = init_distributed(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    manifest = data.read_manifest(data_dir)
    tokenizer = {k: manifest["tokenizer"][k] for k in ("fingerprint", "vocab_size", "eot_id")}

    state = None
    if os.path.exists(checkpoint.checkpoint_path(run_dir)):
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a checkpoint: pass --resume to continue it, "
                                  f"or choose another --out")
        state = checkpoint.load(run_dir)
        data.check_tokenizer(manifest, fingerprint=state["tokenizer"]["fingerprint"],
                             vocab_size=state["tokenizer"]["vocab_size"], expected_from=f"the checkpoint in {run_dir}")
        changed = {k: (v, getattr(cfg, k)) for k, v in state["train_config"].items() if getattr(cfg, k, v) != v}
        if changed and world.main:
            print(f"resuming with a changed [train]: {changed} (checkpoint value, job value); "
                  f"the run will not match an uninterrupted one", file=sys.stderr)
        mconf = checkpoint.model_config_of(state)
        wanted = _model_config(job, manifest)
        if mconf != wanted and not cfg.init_from:  # an imported model's shape came from its directory
            raise ValueError(f"the job's [model] differs from the checkpoint's ({mconf} vs {wanted}); "
                             f"a resumed run keeps its model")
    else:
        mconf = _model_config(job, manifest)
    if manifest["splits"]["train"]["tokens"] < mconf.block_size + 1:
        raise ValueError(f"the train split has {manifest['splits']['train']['tokens']} tokens, fewer than one "
                         f"window of {mconf.block_size + 1}")

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if state is None and cfg.init_from:
        model, _, imported = checkpoint.load_any(hf_dir=cfg.init_from, dropout=mconf.dropout,
                                                 pad_vocab_multiple=mconf.pad_vocab_multiple)
        data.check_tokenizer(manifest, fingerprint=imported["fingerprint"], vocab_size=imported["vocab_size"],
                             expected_from=cfg.init_from)
        mconf = model.config
        model.train()
    else:
        model = GPT(mconf)
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(device)

    # Base lr 1 so that the schedule's factor is the learning rate itself (and a zero learning rate works).
    optimizer = torch.optim.AdamW(model.optimizer_groups(cfg.weight_decay), lr=1.0,
                                  betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate(s, cfg))
    step, position, best_val = 0, 0, None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, position, best_val = state["step"], state["position"], state.get("best_val_loss")
    os.makedirs(run_dir, exist_ok=True)
    if world.main:
        if state is None:
            checkpoint.copy_tokenizer(shard_format.safe_member(data_dir, manifest["tokenizer"]["file"]), run_dir)
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if world.world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    B, T, W = cfg.batch_size, mconf.block_size, world.world_size
    train_windows = data.Windows(data.SplitFiles.from_manifest(data_dir, manifest, "train"), T)
    train_set = data.WindowBatches(train_windows, B, seed=cfg.seed, shuffle=True, start=position,
                                   rank=world.rank, world_size=W)
    batches = iter(data.loader(train_set, cfg.num_workers, pin_memory=device.type == "cuda"))
    val_set = None
    if manifest["splits"].get("val", {}).get("tokens", 0) > T:
        val_windows = data.Windows(data.SplitFiles.from_manifest(data_dir, manifest, "val"), T)
        # A fixed random subset of the val windows, the same at every evaluation.
        val_set = data.WindowBatches(val_windows, B, seed=cfg.seed + 1, shuffle=True, start=0,
                                     stop=min(cfg.eval_batches * B * W, val_windows.count),
                                     rank=world.rank, world_size=W)

    # Restored last: setting up the loaders must not count as training randomness.
    if state is not None and len(state["rng"]) == W:
        rng = state["rng"][world.rank]
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng["cuda"].numel():
            torch.cuda.set_rng_state(rng["cuda"], device)
    else:
        torch.manual_seed(cfg.seed + 1000 * world.rank + step)  # dropout differs across ranks

    amp = autocast(device, cfg.dtype)
    metrics = _Metrics(run_dir, world.main, keep_until_step=step)
    bar = _Progress(world.main, cfg.max_steps, step, bar=progress)
    windows_log = open(os.path.join(run_dir, f"windows-rank{world.rank}.jsonl"), "a") if cfg.record_windows else None
    tokens_per_step = cfg.grad_accum * B * T * W
    last_saved = step if state is not None else -1
    target = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
    flops_per_step = raw_model.flops_per_token() * tokens_per_step

    def save() -> None:
        nonlocal last_saved
        rngs = _gather(_rng_state(device), world)
        if world.main:
            checkpoint.save(run_dir, {
                "step": step, "position": position, "epoch": position // train_windows.count,
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rngs, "world_size": W,
                "model_config": checkpoint.config_dict(mconf), "train_config": checkpoint.config_dict(cfg),
                "tokenizer": tokenizer, "best_val_loss": best_val, "tokens_seen": position * T,
            })
        last_saved = step

    model.train()
    t_last, tokens_last = time.perf_counter(), 0
    t_start = t_last
    try:
        with _StopFlag() as stop:
            while step < target:
                loss_sum = torch.zeros((), device=device)
                for micro in range(cfg.grad_accum):
                    x, y, ids = next(batches)
                    if windows_log is not None:
                        windows_log.write(json.dumps({"step": step + 1, "micro": micro, "ids": ids.tolist()}) + "\n")
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    last_micro = micro == cfg.grad_accum - 1
                    sync = contextlib.nullcontext() if W == 1 or last_micro else model.no_sync()
                    with sync:
                        with amp:
                            _, loss = model(x, y)
                        (loss / cfg.grad_accum).backward()
                    loss_sum += loss.detach().float()
                grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                             if cfg.grad_clip > 0 else None)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                position += cfg.grad_accum * B * W
                tokens_last += tokens_per_step

                if step % cfg.log_every == 0 or step == target:
                    loss_mean = loss_sum / cfg.grad_accum
                    if W > 1:
                        dist.all_reduce(loss_mean, op=dist.ReduceOp.AVG)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    elapsed = time.perf_counter() - t_last
                    record = {"step": step, "loss": loss_mean.item(), "lr": lr,
                              "grad_norm": None if grad_norm is None else grad_norm.item(),
                              "tokens": position * T, "epoch": position / train_windows.count,
                              "tokens_per_s": tokens_last / elapsed if elapsed > 0 else 0.0}
                    if device.type == "cuda":
                        record["tflops_per_gpu"] = flops_per_step * (tokens_last / tokens_per_step) / elapsed / W / 1e12
                    metrics.write(record)
                    bar.update(step, record)
                    t_last, tokens_last = time.perf_counter(), 0

                # Every rank must agree on stopping before the (collective) evaluation below.
                out_of_time = max_seconds is not None and time.perf_counter() - t_start >= max_seconds
                stopping = torch.tensor([1.0 if stop.requested else 0.0, 1.0 if out_of_time else 0.0])
                if W > 1:
                    dist.all_reduce(stopping, op=dist.ReduceOp.MAX)
                out_of_time = bool(stopping[1].item())  # a time-limited run ends with a validation
                if val_set is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time):
                    val_loss, _ = evaluate(model, data.loader(val_set), device, amp)
                    best_val = val_loss if best_val is None else min(best_val, val_loss)
                    metrics.write({"step": step, "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 700))})
                    bar.note(f"step {step}: val loss {val_loss:.4f}, perplexity {math.exp(min(val_loss, 700)):.2f}")

                if step % cfg.checkpoint_every == 0:
                    save()
                if stopping.any().item():
                    break
        if last_saved != step:
            save()
    finally:
        bar.close()
        metrics.close()
        if windows_log is not None:
            windows_log.close()
    summary = {"rank": world.rank, "step": step, "position": position, "epoch": position / train_windows.count,
               "best_val_loss": best_val, "checkpoint": checkpoint.checkpoint_path(run_dir)}
    if W > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary
