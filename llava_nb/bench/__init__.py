"Performance benchmarks: llava_nb against Hugging Face transformers and the machine's ceilings, as ratios measured in one run (`llava_bench`)."
