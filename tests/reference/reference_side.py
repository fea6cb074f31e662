"""Run by the reference's own Python (.reference/bin/python, llava-torch 1.2.2.post1, transformers 4.37.2): never by llava_nb's.

    python reference_side.py REQUEST.json OUT.pt

REQUEST names a task and its arguments; OUT receives a dict of tensors and lists (torch.save). Each task uses only the
installed reference package, the way its own scripts do; the one change is that its loader's float16 becomes float32 (it
hard-codes float16, which a CPU cannot compute with and which would round the weights llava_nb compares against).
"""
import json
import sys
import types

import torch


def fp32_builder():
    "The reference's `load_pretrained_model`, with its `torch.float16` read as float32 (the only run-time change)."
    import llava.model.builder as builder
    builder.torch = types.SimpleNamespace(**{**vars(torch), "float16": torch.float32})
    return builder.load_pretrained_model


def load(req):
    tokenizer, model, processor, context_len = fp32_builder()(req["model_path"], req.get("model_base"), req["model_name"], device="cpu")
    return tokenizer, model.float().eval(), processor


def prompt_ids(req, tokenizer, model):
    "The prompt as the reference's run_llava builds it: <image> (between <im_start>/<im_end> if the config says so), then tokenizer_image_token."
    from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.mm_utils import tokenizer_image_token
    prompt = req["prompt"]
    if getattr(model.config, "mm_use_im_start_end", False):
        prompt = prompt.replace(DEFAULT_IMAGE_TOKEN, DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN)
    return tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]


def task_logits(request):
    "Next-token logits and 20 greedy tokens for one image question, for each model of the request."
    return {"models": [model_logits({**request, **one}) for one in request["models"]]}


def model_logits(req):
    from PIL import Image
    from llava.mm_utils import process_images
    tokenizer, model, processor = load(req)
    ids = prompt_ids(req, tokenizer, model)
    pixels = process_images([Image.open(req["image"]).convert("RGB")], processor, model.config).float()
    with torch.no_grad():
        logits = model(input_ids=ids, images=pixels).logits[0, -1]
        out = model.generate(ids, images=pixels, do_sample=False, max_new_tokens=req.get("max_new_tokens", 20), use_cache=True)
    tokens = out[0].tolist()
    if tokens[:1] == [model.config.bos_token_id]:
        tokens = tokens[1:]  # transformers 4.37 starts what it generates from inputs_embeds with BOS: not a generated token
    return {"logits": logits, "tokens": tokens, "input_ids": ids[0].tolist(), "pixels": pixels,
            "vocab": len(tokenizer), "text": tokenizer.decode(out[0], skip_special_tokens=True)}


def task_tokens(req):
    "Prompt ids of rendered conversations, with the reference's templates and tokenizer (use_fast=False)."
    from transformers import AutoTokenizer
    from llava import conversation as conversation_lib
    from llava.mm_utils import tokenizer_image_token
    tokenizer = AutoTokenizer.from_pretrained(req["tokenizer"], use_fast=False)
    if req.get("add_tokens"): tokenizer.add_tokens(req["add_tokens"], special_tokens=True)
    results = []
    for case in req["cases"]:
        conv = conversation_lib.conv_templates[case["template"]].copy()
        for role, message in case["messages"]: conv.append_message(conv.roles[role], message)
        try: prompt = conv.get_prompt()
        except Exception as e:  # e.g. 'plain' cannot render an open assistant turn
            results.append({"error": f"{type(e).__name__}: {e}"})
            continue
        results.append({"prompt": prompt, "ids": tokenizer_image_token(prompt, tokenizer),
                        "plain_ids": tokenizer(prompt).input_ids})
    return {"results": results}


def task_bases(req):
    "A plain LM folder and a CLIP folder as the reference reads them: the LM's ids, logits and greedy tokens; CLIP's loading report and features."
    from PIL import Image
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor, CLIPVisionModel
    tokenizer = AutoTokenizer.from_pretrained(req["lm"], use_fast=False)
    lm = AutoModelForCausalLM.from_pretrained(req["lm"], torch_dtype=torch.float32).eval()
    ids = tokenizer(req["text"], return_tensors="pt").input_ids
    clip, info = CLIPVisionModel.from_pretrained(req["clip"], output_loading_info=True)
    pixels = CLIPImageProcessor.from_pretrained(req["clip"])(Image.open(req["image"]).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = lm(ids).logits[0, -1]
        tokens = lm.generate(ids, do_sample=False, max_new_tokens=20)[0, ids.shape[1]:].tolist()
        features = clip.eval()(pixels, output_hidden_states=True).hidden_states[-2]
    return {"input_ids": ids[0].tolist(), "logits": logits, "tokens": tokens, "features": features,
            "missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"])}


TASKS = {"logits": task_logits, "tokens": task_tokens, "bases": task_bases}

if __name__ == "__main__":
    request = json.loads(open(sys.argv[1]).read())
    torch.manual_seed(0)
    torch.save(TASKS[request["task"]](request), sys.argv[2])
