"LLaVA data: the JSON format and its validation, target masking for every template, the lazy dataset, collator and sampler, converters."
