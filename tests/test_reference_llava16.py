"""LLaVA-1.6 (any resolution) checkpoints in the reference's format compute in llava_nb what the reference's own code computes
(llava-torch 1.2.2.post1, transformers 4.37.2, `make reference`): next-token logits within 1e-5 and 20 identical greedy tokens on
images of several sizes and aspect ratios, for a Llama and a Mistral 1.6 model, and a batch that mixes the sizes."""
import pytest
import torch
from PIL import Image

from llava_nb.mm_utils import get_anyres_image_grid_shape, process_images, tokenizer_image_token
from llava_nb.model.builder import load_pretrained_model
from llava_nb.reference import run_reference
from llava_nb.testing import ANYRES_PINPOINTS, PROMPT_LATEST, make_tiny_checkpoints, save_example_images

TOLERANCE = 1e-5
GREEDY = 20
SIZES = [(90, 40), (40, 90), (48, 48), (100, 30), (33, 97), (64, 32), (17, 61)]  # wide, tall, square, 3 tiles each way, odd sizes
PROMPTS = ["USER: <image>\nWhat colour is the circle? ASSISTANT:", "USER: <image>\nDescribe it. ASSISTANT:",
           "USER: <image>\nWhere is the square? ASSISTANT:"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava16")
    cks = make_tiny_checkpoints(root / "tiny", formats=("v1_6", "v1_6_mistral"))
    return cks, save_example_images(root, SIZES)


def llava_nb_outputs(path, image):
    tokenizer, model, processor, _ = load_pretrained_model(path, None, device="cpu")
    picture = Image.open(image).convert("RGB")
    pixels = process_images([picture], processor, model.config)
    ids = tokenizer_image_token(PROMPT_LATEST, tokenizer, return_tensors="pt")[None]
    with torch.no_grad():
        logits = model(input_ids=ids, images=pixels, image_sizes=[picture.size]).logits[0, -1]
        tokens = model.generate(ids, images=pixels, image_sizes=[picture.size], do_sample=False, max_new_tokens=GREEDY)[0].tolist()
    return logits, tokens


@pytest.mark.parametrize("name,reference_name", [("v1_6", "llava-v1.6-tiny"), ("v1_6_mistral", "llava-v1.6-mistral-tiny")])
def test_llava_1_6_logits_and_greedy_tokens_equal_the_reference(setup, name, reference_name):
    cks, images = setup
    path = cks.paths[name]
    models = [{"model_path": str(path), "model_base": None, "model_name": reference_name, "prompt": PROMPT_LATEST, "image": str(im)}
              for im in images]
    theirs = run_reference("logits", models=models, max_new_tokens=GREEDY)["models"]
    report, failures = [], []
    for size, image, ref in zip(SIZES, images, theirs):
        logits, tokens = llava_nb_outputs(path, image)
        diff = (logits - ref["logits"]).abs().max().item()
        cols, rows = get_anyres_image_grid_shape(size, ANYRES_PINPOINTS, 32)
        report.append(f"{name} {size[0]}x{size[1]} ({cols}x{rows} tiles): max|logits diff| {diff:.2e}, "
                      f"greedy {sum(a == b for a, b in zip(tokens, ref['tokens']))}/{len(ref['tokens'])}")
        if diff > TOLERANCE or tokens != ref["tokens"]: failures.append(report[-1] + f" ours {tokens} reference {ref['tokens']}")
    print("\n".join(report))
    assert len({get_anyres_image_grid_shape(s, ANYRES_PINPOINTS, 32) for s in SIZES}) >= 4  # several grids are exercised
    assert not failures, "\n".join(failures)


def test_llava_1_6_batch_of_mixed_sizes_equals_the_reference(setup):
    cks, images = setup
    path, chosen = cks.paths["v1_6"], images[:3]
    theirs = run_reference("batch", model_path=str(path), model_base=None, model_name="llava-v1.6-tiny", prompts=PROMPTS,
                           images=[str(im) for im in chosen])
    tokenizer, model, processor, _ = load_pretrained_model(path, None, device="cpu")
    pictures = [Image.open(im).convert("RGB") for im in chosen]
    sizes = [p.size for p in pictures]
    pixels = process_images(pictures, processor, model.config)
    ids, mask = theirs["input_ids"], theirs["attention_mask"]
    ours_ids = [tokenizer_image_token(p, tokenizer) for p in PROMPTS]
    assert [row[m].tolist() for row, m in zip(ids, mask)] == ours_ids  # the same prompt ids on both sides
    with torch.no_grad():
        _, _, spliced_mask, _, _, _ = model.prepare_inputs_labels_for_multimodal(ids, None, mask.long(), None, None, pixels, sizes)
        logits = model(input_ids=ids, attention_mask=mask.long(), images=pixels, image_sizes=sizes).logits
    assert logits.shape == theirs["logits"].shape, (logits.shape, theirs["logits"].shape)
    for row in range(len(PROMPTS)):
        real = spliced_mask[row].bool()
        diff = (logits[row][real] - theirs["logits"][row][real]).abs().max().item()
        print(f"batch row {row} image {sizes[row]}: {int(real.sum())} positions, max|logits diff| {diff:.2e}")
        assert diff <= TOLERANCE
