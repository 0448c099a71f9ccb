"""The chunked training loss equals the model's own loss and gradients, in less memory."""

import pytest

from poetwb.core import lean_loss


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_chunked_loss_and_gradients_equal_the_models_own(tiny_models, kind):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    targets = ["c_attn"] if kind == "gpt2" else ["q_proj", "v_proj"]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models[kind]),
                           LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    ids = torch.randint(5, 60, (3, 17))
    labels = ids.clone()
    labels[1, 12:] = -100  # padding at the end of a row, as the collator makes it
    labels[2, :5] = -100  # a prompt that is not learned, as in stage 2
    backbone, head = lean_loss.parts(model)
    grads = []
    for way in ("own", "chunked"):
        model.zero_grad()
        if way == "own":
            loss = model(input_ids=ids, labels=labels).loss
        else:
            loss = lean_loss.causal_lm_loss(backbone(input_ids=ids)[0], labels, head, chunk=7)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (own, g_own), (chunked, g_chunked) = grads
    torch.testing.assert_close(chunked, own, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_own, g_chunked, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    # divided by the Trainer's item count when it gives one (gradient accumulation across batches)
    n = int((labels[:, 1:] != -100).sum())
    with torch.no_grad():
        summed = lean_loss.causal_lm_loss(backbone(input_ids=ids)[0], labels, head, num_items=2 * n)
    torch.testing.assert_close(summed, own / 2, rtol=1e-5, atol=1e-6)


def test_a_model_with_a_lora_head_keeps_its_own_loss(tiny_models):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models["llama"]),
                           LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    assert lean_loss.parts(model) is None
