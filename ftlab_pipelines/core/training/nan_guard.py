"""A nan or inf training loss stops training at once, keeping the last checkpoint with finite weights."""

from __future__ import annotations

from pathlib import Path

from ftlab_pipelines.core.training.checkpoints import keep_last_good_checkpoint


class NonFiniteLoss(RuntimeError):
    """The training loss became nan or inf."""


def stop_on_nonfinite_loss(trainer, checkpoint_dir: Path) -> None:
    """Check every training step's loss; a nan or inf stops training with the step (the Trainer's own
    `logging_nan_inf_filter` would only leave it out of the logged average and carry on)."""
    import torch

    step = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        loss = step(model, inputs, *args, **kwargs)
        if not bool(torch.isfinite(loss.detach()).all()):
            raise nonfinite_error(float(loss.detach().float().mean()), trainer.state.global_step + 1,
                                  trainer.args.learning_rate, checkpoint_dir)
        return loss

    trainer.training_step = training_step


def nonfinite_error(value: float, step: int, learning_rate: float, checkpoint_dir: Path) -> NonFiniteLoss:
    kept = keep_last_good_checkpoint(checkpoint_dir, step)
    where = (f"the last good checkpoint {kept} is kept and a re-run resumes from it" if kept
             else "no good checkpoint was written before it")
    return NonFiniteLoss(
        f"training loss is {value} at step {step}: training stopped; {where}. Lower train.learning_rate "
        f"(now {learning_rate:g}), set train.bf16: off, or look for broken rows in the data"
    )
