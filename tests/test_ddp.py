"""Data-parallel training: the same ``train`` call under ``torchrun --nproc_per_node 2`` (gloo, CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Run by each process: trains 3 steps on 2 tiny phantoms and records, per rank, a hash of the final weights,
# its history and which ranks wrote checkpoint files.
SCRIPT = textwrap.dedent('''
    import hashlib, json, os, sys
    import torch
    import torch.distributed as dist
    from data_utils.phantoms import make_dataset
    import lmisa_lite.training as training

    torch.set_num_threads(1)
    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    save = training.save_checkpoint

    def logged_save(state, path):
        with open(os.path.join(out, f"saved_by_rank{rank}.txt"), "a") as f:
            f.write(os.path.basename(path) + "\\n")
        return save(state, path)

    training.save_checkpoint = logged_save
    ct = make_dataset("kidney", "ct", n=2, dims=2, seed=0, shape=(32, 32))
    mri = make_dataset("kidney", "mri", n=2, dims=2, seed=0, shape=(32, 32))
    config = training.TrainConfig(steps=3, image_size=(32, 32), base_filters=4, depth=3, device="cpu",
                                  progress=False, out_dir=os.path.join(out, "run"), val_every=2)
    result = training.train(config, ct, mri, val=ct[:1])
    digest = hashlib.sha256()
    for module in (result.model, result.critic):
        for key, value in sorted(module.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().numpy().tobytes())
    report = dict(hash=digest.hexdigest(), loss_g=result.history["loss_g"],
                  val_loss=result.history["val_loss"], group_left=dist.is_initialized(),
                  last=str(result.last_checkpoint))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
''')


@pytest.mark.slow
def test_two_process_training_matches_across_ranks(tmp_path: Path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["hash"] == reports[1]["hash"]  # gradients were averaged, buffers synchronised
    assert reports[0]["loss_g"] == reports[1]["loss_g"] and len(reports[0]["loss_g"]) == 3  # averaged losses
    assert not reports[0]["group_left"] and not reports[1]["group_left"]  # train destroyed the group it made
    assert reports[0]["last"].endswith("last.pt") and reports[1]["last"] == "None"
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "best.pt").is_file()
    saved = (tmp_path / "saved_by_rank0.txt").read_text().split()
    assert saved[0] == "best.pt" and saved[-1] == "last.pt" and set(saved) == {"best.pt", "last.pt"}
    assert not (tmp_path / "saved_by_rank1.txt").exists()
    # rank 0 validated (steps 1 and 2), the other rank did not
    assert sum(v == v for v in reports[0]["val_loss"]) == 2
    assert all(v != v for v in reports[1]["val_loss"])
