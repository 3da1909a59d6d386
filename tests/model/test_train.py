"""Training end to end on real shards: learning, exact resume, checkpoints, DDP on CPU, and the commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import support_shards
import torch
from support_shards import TINY_MODEL, TINY_TRAIN, write_job

from webtext.cli import main as cli
from webtext.model import checkpoint
from webtext.model.config import load_job
from webtext.model.train import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models on a shared 2-core machine: extra threads only contend.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def metrics(run: str, key: str = "loss") -> list[tuple[int, float]]:
    with open(os.path.join(run, checkpoint.METRICS)) as f:
        return [(r["step"], r[key]) for r in map(json.loads, f) if key in r]


def run_train(tmp_path, name: str, data_dir: str, model: dict | None = None, stop_at=None, resume=False, **train_kw):
    job = write_job(str(tmp_path / f"{name}.toml"), {**TINY_MODEL, **(model or {})}, {**TINY_TRAIN, **train_kw})
    run = str(tmp_path / name)
    train(data_dir, load_job(job), run, resume=resume, stop_at=stop_at, progress=False)
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 500 steps on the stdlib docs shards (~20 s on one core)."""
    data_dir = support_shards.shard_dir()
    tmp = tmp_path_factory.mktemp("trained")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run = run_train(tmp, "run", data_dir, model=dict(n_embd=64, block_size=64), batch_size=16, max_steps=500,
                    learning_rate=1e-2, min_learning_rate=1e-3, warmup_steps=10, decay_steps=500,
                    log_every=10, eval_every=250, eval_batches=8, checkpoint_every=250)
    torch.set_num_threads(before)
    return data_dir, run


def test_training_drives_loss_well_below_the_unigram_entropy(trained):
    data_dir, run = trained
    entropy = support_shards.unigram_entropy(data_dir, "val")
    val = metrics(run, "val_loss")
    assert [s for s, _ in val] == [250, 500]
    first_train_loss = metrics(run)[0][1]
    assert first_train_loss > entropy  # it starts no better than knowing token frequencies
    assert val[-1][1] < entropy - 0.75, (val, entropy)  # and ends knowing far more than them, on unseen documents
    state = checkpoint.load(run)
    assert state["step"] == 500 and state["position"] == 500 * 16


def test_checkpoint_loads_with_weights_only_and_records_the_run(trained):
    data_dir, run = trained
    state = torch.load(os.path.join(run, checkpoint.CHECKPOINT), weights_only=True)
    manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
    assert state["tokenizer"]["fingerprint"] == manifest["tokenizer"]["fingerprint"]
    assert {"model", "optimizer", "scheduler", "rng", "position", "model_config", "train_config"} <= set(state)
    assert state["model_config"]["vocab_size"] == manifest["tokenizer"]["vocab_size"]
    assert os.path.exists(os.path.join(run, "tokenizer.json"))
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]


def test_eval_sample_and_export_commands(trained, tmp_path, capsys):
    data_dir, run = trained
    assert cli(["eval", "--ckpt", run, "--data", data_dir, "--split", "val", "--max-batches", "4"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["tokens"] == 4 * 8 * 64 and result["perplexity"] == pytest.approx(2.718281828 ** result["loss"])

    args = ["sample", "--ckpt", run, "--prompt", "The ", "--max-new-tokens", "30", "--seed", "5", "--top-k", "20"]
    assert cli(args) == 0
    first = capsys.readouterr().out
    assert cli(args) == 0
    assert capsys.readouterr().out == first and first.startswith("The ")

    out = str(tmp_path / "hf")
    assert cli(["export", "--ckpt", run, "--hf", out]) == 0
    capsys.readouterr()
    assert cli(["eval", "--hf", out, "--data", data_dir, "--split", "val", "--max-batches", "4"]) == 0
    from_hf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert from_hf["loss"] == pytest.approx(result["loss"], abs=1e-5)


def test_mismatched_tokenizer_is_refused_by_eval_and_resume(trained, tmp_path, capsys):
    data_dir, run = trained
    other = support_shards.write_shard_dir(str(tmp_path / "other"), support_shards.train_tokenizer(300),
                                           support_shards.documents()[:20])
    assert cli(["eval", "--ckpt", run, "--data", other]) == 2
    assert "encoded with tokenizer" in capsys.readouterr().err
    job = write_job(str(tmp_path / "job.toml"), {**TINY_MODEL, "n_embd": 64, "block_size": 64}, TINY_TRAIN)
    assert cli(["train", "--data", other, "--config", job, "--out", run, "--resume", "--no-progress"]) == 2
    assert "tokenizer" in capsys.readouterr().err
    assert checkpoint.load(run)["step"] == 500  # the run is untouched
    # without --resume an existing run is never overwritten
    assert cli(["train", "--data", data_dir, "--config", job, "--out", run, "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    # a job file that names a vocabulary size must agree with the shards
    wrong = write_job(str(tmp_path / "wrong.toml"), {**TINY_MODEL, "vocab_size": 50257}, TINY_TRAIN)
    assert cli(["train", "--data", data_dir, "--config", wrong, "--out", str(tmp_path / "new"), "--no-progress"]) == 2
    assert "vocabulary of 50257" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "new" / "checkpoint.pt")


def test_resume_continues_exactly(tmp_path):
    data_dir = support_shards.shard_dir()
    kw = dict(max_steps=9, checkpoint_every=4, eval_every=3, grad_accum=2)
    model = dict(dropout=0.1)  # so the restored RNG state matters
    whole = run_train(tmp_path, "whole", data_dir, model=model, **kw)
    split = run_train(tmp_path, "split", data_dir, model=model, stop_at=6, **kw)
    assert checkpoint.load(split)["step"] == 6
    assert [s for s, _ in metrics(split)] == list(range(1, 7))
    run_train(tmp_path, "split", data_dir, model=model, resume=True, **kw)
    assert metrics(split) == metrics(whole)  # every step's loss, bit for bit
    assert metrics(split, "val_loss") == metrics(whole, "val_loss")
    a, b = checkpoint.load(whole), checkpoint.load(split)
    assert a["position"] == b["position"] == 9 * 2 * TINY_TRAIN["batch_size"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    data_dir = support_shards.shard_dir()
    common = dict(max_steps=3, grad_accum=2, record_windows=True, eval_every=3, checkpoint_every=3)
    ddp_job = write_job(str(tmp_path / "ddp.toml"), TINY_MODEL, {**TINY_TRAIN, **common, "batch_size": 2})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "webtext.cli", "train", "--data", data_dir, "--config", ddp_job, "--out", str(tmp_path / "ddp"),
         "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = run_train(tmp_path, "single", data_dir, **{**common, "batch_size": 4})

    def windows(run, rank):
        with open(os.path.join(run, f"windows-rank{rank}.jsonl")) as f:
            return [(r["step"], r["micro"], r["ids"]) for r in map(json.loads, f)]

    rank0, rank1, one = windows(str(tmp_path / "ddp"), 0), windows(str(tmp_path / "ddp"), 1), windows(single, 0)
    seen0 = {i for _, _, ids in rank0 for i in ids}
    seen1 = {i for _, _, ids in rank1 for i in ids}
    assert len(seen0) == len(seen1) == 3 * 2 * 2 and not seen0 & seen1  # disjoint
    for (s, m, a), (_, _, b), (_, _, c) in zip(rank0, rank1, one):  # together, the single process's batches
        assert sorted(a + b) == sorted(c), (s, m)

    ddp_loss, single_loss = metrics(str(tmp_path / "ddp")), metrics(single)
    assert ddp_loss[0][1] == pytest.approx(single_loss[0][1], rel=1e-6, abs=1e-6)
    # after one update from averaged gradients both still agree, up to float summation order
    assert ddp_loss[1][1] == pytest.approx(single_loss[1][1], rel=1e-4)


def test_init_from_a_hugging_face_directory(trained, tmp_path):
    data_dir, run = trained
    hf_dir = str(tmp_path / "hf")
    assert cli(["export", "--ckpt", run, "--hf", hf_dir]) == 0
    # zero learning rate: the run's weights must stay exactly the imported ones
    start = run_train(tmp_path, "from-hf", data_dir, model=dict(n_embd=64, block_size=64), max_steps=1,
                      learning_rate=0.0, min_learning_rate=0.0, weight_decay=0.0, init_from=hf_dir)
    trained_state, started = checkpoint.load(run)["model"], checkpoint.load(start)["model"]
    for name, tensor in trained_state.items():
        assert torch.equal(tensor, started[name]), name
    assert metrics(start)[0][1] < support_shards.unigram_entropy(data_dir)  # it starts as the trained model
    run_train(tmp_path, "from-hf", data_dir, model=dict(n_embd=64, block_size=64), max_steps=2, resume=True,
              learning_rate=0.0, min_learning_rate=0.0, weight_decay=0.0, init_from=hf_dir)
    assert checkpoint.load(start)["step"] == 2


def test_sigterm_stops_after_the_step_and_saves(tmp_path):
    import signal

    data_dir = support_shards.shard_dir()
    job = write_job(str(tmp_path / "job.toml"), TINY_MODEL, {**TINY_TRAIN, "max_steps": 1_000_000,
                                                             "decay_steps": 1_000_000, "checkpoint_every": 1_000_000})
    run = str(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.Popen([sys.executable, "-m", "webtext.cli", "train", "--data", data_dir, "--config", job,
                             "--out", run, "--no-progress"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step 3 "):
                proc.send_signal(signal.SIGTERM)
                break
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    step = checkpoint.load(run)["step"]
    assert step >= 3
    assert [s for s, _ in metrics(run)] == list(range(1, step + 1))


def test_a_time_limit_stops_with_a_validation_and_a_checkpoint(tmp_path):
    data_dir = support_shards.shard_dir()
    job = write_job(str(tmp_path / "t.toml"), TINY_MODEL, {**TINY_TRAIN, "max_steps": 10_000, "eval_every": 10_000,
                                                          "checkpoint_every": 10_000})
    run = str(tmp_path / "run")
    summary = train(data_dir, load_job(job), run, progress=False, max_seconds=0.0)
    assert summary["step"] == 1  # the budget is checked after every step
    assert [s for s, _ in metrics(run, "val_loss")] == [1]
    assert checkpoint.load(run)["step"] == 1
