"""Export a checkpoint as a Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer.json).

`transformers.GPT2LMHeadModel.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)` load it and give
the same logits as the checkpoint. The reverse direction needs no command: `--hf DIR` in `webtext sample` and
`webtext eval`, and `init_from = "DIR"` in a job file, read such a directory directly.
"""

from __future__ import annotations

from webtext.model import checkpoint, hf

EXAMPLE = """  webtext export --ckpt out/run-tiny --hf out/tiny-hf"""


def add_arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True, help="run directory written by `webtext train`")
    parser.add_argument("--hf", required=True, metavar="DIR", help="directory to write")


def main(args) -> int:
    model, meta = checkpoint.load_model(args.ckpt)
    hf.export_dir(model, checkpoint.run_tokenizer(args.ckpt), meta["tokenizer"]["eot_id"], args.hf)
    print(f"wrote {args.hf}: step {meta['step']}, {model.num_params(non_embedding=False):,} parameters")
    return 0
