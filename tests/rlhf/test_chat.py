from rlhf.chat import format_pair_text, format_prompt


class PlainTokenizer:
    chat_template = None
    eos_token = "<eos>"


def test_format_prompt_uses_the_chat_template_with_generation_prompt(tiny_model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    assert format_prompt(tok, "hi") == "<|user|>\nhi</s>\n<|assistant|>\n"
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert format_prompt(tok, turns).startswith("<|system|>\nbe brief</s>\n<|user|>")
    assert format_pair_text(tok, "hi", "yes") == "<|user|>\nhi</s>\n<|assistant|>\nyes</s>"


def test_format_without_template_is_plain_text_plus_eos():
    assert format_prompt(PlainTokenizer(), "hi") == "hi"
    assert format_pair_text(PlainTokenizer(), "hi", " there") == "hi there<eos>"
