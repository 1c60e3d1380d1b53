"""The same ``agq train`` under torchrun: two CPU processes, gloo, DistributedDataParallel."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from agq.training import data
from agq.training.checkpoint import load_checkpoint, load_deployable


def test_two_gloo_processes_train_and_write_one_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "agq.cli", "train", "--config", "configs/digits_tiny.yaml", "--no-progress",
           "--set", f"train.output_dir={tmp_path}", "--set", "train.pretrain_epochs=1",
           "--set", "train.epochs=1", "--set", "ssp.decay_epochs=1", "--set", "data.limit_train=640"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("agq train: wrote") == 1  # rank 0 alone reports
    path = tmp_path / "digits_tiny" / "checkpoint.pt"
    meta = load_checkpoint(path)["meta"]
    assert meta["phase"] == "finetune" and meta["epoch"] == 2
    # the accuracy summed over both processes' shards is that of the saved F on the whole test split
    cfg, model, _ = load_deployable(path)
    images, labels = data.test_images(cfg.data)
    with torch.no_grad():
        correct = int((model(torch.tensor(images).float()).argmax(1) == torch.tensor(labels)).sum())
    assert 100 * correct / len(labels) == meta["metrics"]["test_top1"]
    assert meta["metrics"]["test_top5"] >= meta["metrics"]["test_top1"]
