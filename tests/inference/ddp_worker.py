"""Run by ``torchrun --nproc_per_node 2`` from test_distributed.py (not a test module itself).

Each process: (1) checks the collective gradient step on a deterministic loss, (2) fits the
same LatentODE on the same data, then saves what the test compares.
"""

import json
import os
import sys
from pathlib import Path

import torch

from latentode import LatentODE
from latentode.datasets import make_spirals
from latentode.inference import DataParallel

CONFIG = dict(
    latent_dim=4,
    ode_hidden_dim=16,
    encoder_hidden_dim=16,
    decoder_hidden_dim=16,
    max_epochs=4,
    batch_size=32,
    lr=0.01,
    random_state=0,
)


def regression_gradient(parallel, x, y, w):
    """The sharded, share-weighted gradient of the whole batch's mean squared error."""
    idx = parallel.shard(torch.arange(x.shape[0]))
    w = w.clone().requires_grad_(True)
    loss = ((x[idx] @ w - y[idx]) ** 2).mean() * (len(idx) / x.shape[0])
    loss.backward()
    parallel.sum_gradients([w])
    return w.grad


def streamed_fit(out: Path, rank: int) -> dict:
    """Fit from a Parquet file (rank 0 writes it), recording the blocks this process read."""
    from latentode.datasets import ParquetSeries, write_parquet

    path = out / "spirals.parquet"
    if rank == 0:
        train = make_spirals(n_series=96, n_obs=20, random_state=0).train
        write_parquet(train, path, series_per_group=4)
    torch.distributed.barrier()
    stored, read = ParquetSeries(path, window=16), []
    original_read, original_plan = stored.read_blocks, stored.plan

    def reading(blocks):
        read[-1].extend(int(b) for b in blocks)
        return original_read(blocks)

    def planning(*args, **kwargs):
        read.append([])  # a new epoch
        return original_plan(*args, **kwargs)

    stored.read_blocks, stored.plan = reading, planning
    fit = LatentODE(**{**CONFIG, "max_epochs": 2}).fit(stored)
    return {"state": fit.model_.state_dict(), "read": read, "loss": fit.history_.loss}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    data = make_spirals(n_series=96, n_obs=20, random_state=0)
    model = LatentODE(**CONFIG)
    model.fit(data.train, checkpoint=out / f"checkpoint_rank{rank}.pt")  # joins the group
    parallel = DataParallel.from_environment(torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    x, y, w = (
        torch.randn(10, 3, generator=gen),
        torch.randn(10, generator=gen),
        torch.randn(3, generator=gen),
    )
    grad = regression_gradient(parallel, x, y, w)
    streamed = streamed_fit(out, rank)
    torch.save(
        {"state": model.model_.state_dict(), "grad": grad, "world_size": parallel.world_size},
        out / f"rank{rank}.pt",
    )
    torch.save(streamed, out / f"streamed{rank}.pt")
    if parallel.is_main:
        (out / "history.json").write_text(json.dumps(model.history_.to_dict()))
        (out / "score.json").write_text(json.dumps(model.score(data.test)))
    # leave together: a process exiting while the other still holds the group can abort
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
