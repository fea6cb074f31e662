"Build (once) a LLaVA of realistic shape with random weights: LLaMA 512 x 8, vocab 32000; CLIP 384 x 6 at 224 px."
import tempfile
import torch
from pathlib import Path
from llava_nb.tiny import save_tiny_clip, save_tiny_llama, load_image_processor
from llava_nb.model.llava import LlavaLlamaForCausalLM
from llava_nb.tokenizer import load_tokenizer
ROOT = Path(tempfile.gettempdir()) / "llava_nb_engine_speed"  # built once, then loaded

def build():
    if (ROOT / "llava" / "config.json").exists(): return
    save_tiny_clip(ROOT / "clip", image_size=224, patch_size=14, hidden_size=384, num_layers=6, num_heads=6)
    save_tiny_llama(ROOT / "lm", hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=8, max_position_embeddings=2048)
    model = LlavaLlamaForCausalLM.from_pretrained(ROOT / "lm").eval()
    model.initialize_vision_modules(ROOT / "clip", mm_projector_type="mlp2x_gelu", image_aspect_ratio="pad",
                                    tokenizer_padding_side="right", tokenizer_model_max_length=2048)
    tok = load_tokenizer(ROOT / "lm")
    n = len(tok)
    model.resize_token_embeddings(32000)
    with torch.no_grad():
        model.lm_head.weight[n:] = 0  # ids the tokenizer lacks never win a greedy pick
        model.lm_head.weight[tok.eos_token_id] = 0  # no early stop: every request runs its max_new_tokens
        model.lm_head.weight[:n] *= 3
    model.config.mm_use_im_patch_token, model.config.mm_use_im_start_end = False, False
    model.save_pretrained(ROOT / "llava"); tok.save_pretrained(ROOT / "llava")

def load():
    build()
    model = LlavaLlamaForCausalLM.from_pretrained(ROOT / "llava").eval()
    model.get_vision_tower().load_model()
    return load_tokenizer(ROOT / "llava"), model, load_image_processor(ROOT / "clip")

if __name__ == "__main__":
    build()
    tok, model, proc = load()
    print(sum(p.numel() for p in model.parameters()) / 1e6, "M params", len(tok), model.config.vocab_size)
