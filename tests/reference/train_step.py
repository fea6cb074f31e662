"""One optimizer step of a LLaVA training command, by the reference's own train.py or by llava_nb's, recording the loss the
Trainer backpropagated (exact, not the 4-decimal log line), the batch's labels, and the projector after the step.

    <python> train_step.py reference|llava_nb OUT.pt -- <training flags>

Run with the reference's Python for `reference`, llava_nb's for `llava_nb`. The one change to the reference: its train.py casts
the vision tower to float16 unless --bf16 (line `vision_tower.to(dtype=...)`); here the tower's `.to` ignores the dtype, so
both sides compute in float32 (a CPU cannot train in float16, and a float16 tower would differ by far more than 1e-5).
Its saving at the end is skipped (it imports deepspeed, a CUDA package, even without DeepSpeed); the step is read from the
trainer instead, on both sides.
"""
import sys

import torch

side, out = sys.argv[1], sys.argv[2]
flags = sys.argv[sys.argv.index("--") + 1:]
record = {"losses": [], "labels": [], "input_ids": []}


def instrument(trainer_cls):
    "Record what each compute_loss call returns and sees, and the trainer itself."
    original = trainer_cls.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        result = original(self, model, inputs, *args, **kwargs)
        loss = result[0] if isinstance(result, tuple) else result
        record["losses"].append(loss.item())
        record["labels"].append(inputs["labels"].detach().clone())
        record["input_ids"].append(inputs["input_ids"].detach().clone())
        record["trainer"] = self
        return result

    trainer_cls.compute_loss = compute_loss


if side == "reference":
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
    from llava.train import llava_trainer
    from llava.train import train as reference_train
    tower_to = CLIPVisionTower.to
    CLIPVisionTower.to = lambda self, *args, dtype=None, **kwargs: tower_to(self, *args, **kwargs)
    instrument(llava_trainer.LLaVATrainer)
    reference_train.safe_save_model_for_hf_trainer = lambda **kwargs: None
    sys.argv = ["train.py", *flags]
    reference_train.train()
else:
    from llava_nb.train import train as nb_train
    instrument(nb_train.LLaVATrainer)
    nb_train.train(flags)

model = record.pop("trainer").model
projector = {k: v.detach().float().clone() for k, v in model.get_model().mm_projector.state_dict().items()}
torch.save({**record, "projector": projector}, out)
