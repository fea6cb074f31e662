"LLaVA training: arguments, the trainer for both stages (full, LoRA, QLoRA), stage-0 bases for the toy world."
