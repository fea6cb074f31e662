"LLaVA evaluation: answer generation, GPT-assisted review, ScienceQA, the toy benchmark."
