"LLaVA serving: the controller, model workers with batched generation, the Gradio web UI, an OpenAI-compatible API and CLI chat."
