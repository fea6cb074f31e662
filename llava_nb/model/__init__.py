"LLaVA models: vision tower, projector, the LLaVA wrapper over Hugging Face causal LMs, loading, saving and conversion."
